"""The roomcast Python client: ``async with connect(urls, token) as client``."""

from roomcast.client.client import Client, Message, State, connect, retryable
from roomcast.errors import (
    AuthenticationFailed,
    ClientClosed,
    ClientError,
    PermissionDenied,
    PublishQueueFull,
    RequestRejected,
)

__all__ = [
    "AuthenticationFailed", "Client", "ClientClosed", "ClientError", "Message",
    "PermissionDenied", "PublishQueueFull", "RequestRejected", "State", "connect", "retryable",
]
