// Unit tests of roomcast.js's logic with Node's test runner and a fake WebSocket (no server).
// Run by tests/browser/test_roomcast_js.py when `node` is installed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { RoomcastClient, backoffDelay, retryable } from "../../node/static/roomcast.js";

test("backoff: full jitter within min(cap, base*2^n)", () => {
  for (let n = 0; n < 40; n++) {
    const top = backoffDelay(n, 250, 30000, () => 0.999999);
    assert.ok(top <= Math.min(30000, 250 * 2 ** n) && top >= 0);
    assert.equal(backoffDelay(n, 250, 30000, () => 0), 0);
  }
  assert.equal(Math.round(backoffDelay(3, 100, 30000, () => 1)), 800);
  assert.equal(backoffDelay(20, 100, 30000, () => 1), 30000);
});

test("close codes: below 4500 reconnect", () => {
  assert.ok(retryable(1012) && retryable(4001) && retryable(null));
  assert.ok(!retryable(4500) && !retryable(4501));
});

class FakeSocket {
  static last = null;
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.readyState = 1;
    FakeSocket.last = this;
    setTimeout(() => this.deliver({ type: "welcome", node: "n1", conn: "c1", user: "u",
      epoch: "e", resume_token: "tok" }), 0);
  }
  send(text) { this.sent.push(JSON.parse(text)); }
  close() { this.readyState = 3; this.onclose?.({ code: 1006, reason: "" }); }
  deliver(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }
}

const tick = () => new Promise((r) => setTimeout(r, 5));

test("dedupe by seq, gap repair by prev, publish acked by id", async () => {
  const c = new RoomcastClient("ws://x/ws", "t", { WebSocketImpl: FakeSocket, shuffleUrls: false });
  const got = [];
  c.addEventListener("message", (e) => got.push(e.detail.seq));
  await c.connect();
  const joining = c.join("r");
  const ws = FakeSocket.last;
  const join = ws.sent.find((f) => f.type === "join");
  ws.deliver({ type: "joined", room: "r", seq: 10, rid: join.rid, resume_token: "tok2" });
  await joining;
  const msg = (seq, prev) => ({ type: "message", room: "r", seq, prev, from: "a", ts: 1, id: null, data: seq });
  ws.deliver(msg(11, 10));
  ws.deliver(msg(11, 10)); // duplicate
  ws.deliver(msg(14, 12)); // gap: 12 missing -> dropped, re-join since 11
  await tick();
  const rejoin = ws.sent.filter((f) => f.type === "join").at(-1);
  assert.equal(rejoin.since, 11);
  ws.deliver(msg(12, 11));
  ws.deliver(msg(14, 12));
  ws.deliver(msg(20, null)); // unknown prev after a lost window: accepted
  assert.deepEqual(got, [11, 12, 14, 20]);

  const pub = c.publish("r", { text: "hi" }, { id: "m1" });
  const frame = ws.sent.find((f) => f.type === "publish");
  assert.equal(frame.id, "m1");
  assert.deepEqual(frame.data, { text: "hi" });
  ws.deliver({ type: "ack", room: "r", id: "m1", seq: 21, duplicate: false, rid: frame.rid });
  assert.equal(await pub, 21);
  c.close();
});

test("offline publishes are sent after reconnect with the same id, rooms resumed", async () => {
  const c = new RoomcastClient("ws://x/ws", "t", { WebSocketImpl: FakeSocket, shuffleUrls: false,
    backoffBase: 1, backoffCap: 2 });
  await c.connect();
  const joining = c.join("r");
  let ws = FakeSocket.last;
  ws.deliver({ type: "joined", room: "r", seq: 5, rid: ws.sent.at(-1).rid, resume_token: "tokR" });
  await joining;
  ws.close(); // network loss
  const pub = c.publish("r", 1, { id: "offline-1" });
  await new Promise((r) => setTimeout(r, 30));
  ws = FakeSocket.last;
  const resume = ws.sent.find((f) => f.type === "resume");
  assert.equal(resume.token, "tokR");
  assert.deepEqual(resume.rooms, { r: 5 });
  ws.deliver({ type: "resumed", rid: resume.rid, resume_token: "tok3",
    rooms: { r: { seq: 5, recovered: true, replayed: 0 } } });
  await tick();
  const frame = ws.sent.find((f) => f.type === "publish");
  assert.equal(frame.id, "offline-1");
  ws.deliver({ type: "ack", room: "r", id: "offline-1", seq: 6, duplicate: false, rid: frame.rid });
  assert.equal(await pub, 6);
  assert.deepEqual(c.lastResume, { r: { seq: 5, recovered: true, replayed: 0 } });
  c.close();
});

test("a temporarily unavailable room is re-joined, not dropped", async () => {
  const c = new RoomcastClient("ws://x/ws", "t", { WebSocketImpl: FakeSocket, shuffleUrls: false });
  await c.connect();
  const joining = c.join("r");
  const ws = FakeSocket.last;
  const first = ws.sent.find((f) => f.type === "join");
  ws.deliver({ type: "error", code: "unavailable", message: "try later", temporary: true,
    room: "r", rid: first.rid });
  await new Promise((r) => setTimeout(r, 700)); // backoff: uniform in [0, 500 ms)
  const again = ws.sent.filter((f) => f.type === "join");
  assert.equal(again.length, 2);
  ws.deliver({ type: "joined", room: "r", seq: 3, rid: again[1].rid });
  assert.equal((await joining).seq, 3);
  assert.deepEqual(c.membersOf("r"), []);
  c.close();
});

test("a connection lost mid-resume resumes again with the previous token; recovered:false resets the position", async () => {
  const c = new RoomcastClient("ws://x/ws", "t", { WebSocketImpl: FakeSocket, shuffleUrls: false,
    backoffBase: 1, backoffCap: 2 });
  await c.connect();
  const joining = c.join("r");
  let ws = FakeSocket.last;
  ws.deliver({ type: "joined", room: "r", seq: 9, rid: ws.sent.at(-1).rid, resume_token: "tokR" });
  await joining;
  ws.close();
  await new Promise((r) => setTimeout(r, 30));
  ws = FakeSocket.last;
  assert.equal(ws.sent.find((f) => f.type === "resume").token, "tokR");
  ws.close(); // lost before `resumed`: the welcome token (no rooms) must not replace tokR
  await new Promise((r) => setTimeout(r, 30));
  ws = FakeSocket.last;
  const resume = ws.sent.find((f) => f.type === "resume");
  assert.equal(resume.token, "tokR");
  assert.deepEqual(resume.rooms, { r: 9 });
  // The stream was recreated: the server's lower position replaces ours.
  ws.deliver({ type: "resumed", rid: resume.rid, resume_token: "tok4",
    rooms: { r: { seq: 2, recovered: false, replayed: 2 } } });
  await tick();
  const got = [];
  c.addEventListener("message", (e) => got.push(e.detail.seq));
  ws.deliver({ type: "message", room: "r", seq: 3, prev: 2, from: "u", ts: 0, id: null, data: 1 });
  assert.deepEqual(got, [3]);
  c.close();
});

test("ephemeral messages (seq 0) are all handed over; presence frames keep the member list", async () => {
  const c = new RoomcastClient("ws://x/ws", "t", { WebSocketImpl: FakeSocket, shuffleUrls: false });
  const got = [];
  const heard = [];
  c.addEventListener("message", (e) => got.push([e.detail.seq, e.detail.data]));
  c.addEventListener("presence", (e) => heard.push([e.detail.joined, e.detail.left, e.detail.sync]));
  await c.connect();
  const joining = c.join("cursor.a");
  const ws = FakeSocket.last;
  const join = ws.sent.find((f) => f.type === "join");
  ws.deliver({ type: "joined", room: "cursor.a", seq: 0, rid: join.rid,
    presence: { users: 1, connections: 1, members: { u: [{ conn: "c1" }] } } });
  await joining;
  const eph = (data) => ({ type: "message", room: "cursor.a", seq: 0, prev: null, from: "b", ts: 1, id: null, data });
  ws.deliver(eph(1));
  ws.deliver(eph(1)); // the same again: not a duplicate by seq, both handed over
  ws.deliver(eph(2));
  assert.deepEqual(got, [[0, 1], [0, 1], [0, 2]]);
  ws.deliver({ type: "presence_diff", room: "cursor.a", joins: { b: { conn: "c2" }, u: { conn: "c1" } },
    leaves: { ghost: { conn: "c9" } }, users: 2, connections: 2 });
  assert.deepEqual(c.membersOf("cursor.a"), ["b", "u"]);
  ws.deliver({ type: "presence_count", room: "cursor.a", users: 500, connections: 510 });
  assert.equal(c.membersOf("cursor.a"), null);
  assert.deepEqual(c.countsOf("cursor.a"), { users: 500, connections: 510 });
  ws.deliver({ type: "presence_state", room: "cursor.a", users: 1, connections: 1, members: { b: [{ conn: "c2" }] } });
  assert.deepEqual(c.membersOf("cursor.a"), ["b"]);
  assert.deepEqual(heard.map(([j, l]) => [j, l]), [[[], []], [["b"], []], [[], []], [[], []]]);
  c.close();
});
