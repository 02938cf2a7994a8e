// The roomcast demo page: /?token=JWT&room=lobby&nodes=ws://a/ws,ws://b/ws
import { RoomcastClient } from "/roomcast.js";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const room = params.get("room") || "lobby";
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const nodes = (params.get("nodes") || `${scheme}//${location.host}/ws`).split(",");
const $ = (id) => document.getElementById(id);

$("room").textContent = room;
const stateEl = $("state");

function showState(state, why = "") {
  stateEl.textContent = state;
  stateEl.className = `badge ${state}`;
  $("why").textContent = why;
}

const CLOSES = {
  1006: "connection lost", 1012: "node draining", 4001: "too slow to read", 4003: "disconnected by the server",
  4500: "token expired", 4501: "session resumed elsewhere", 4502: "banned",
};

function time(ts) {
  return ts ? new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "";
}

if (!token) {
  showState("failed", "add ?token=<JWT> to the URL (make run prints a ready-made link)");
} else {
  const client = new RoomcastClient(nodes, token, { shuffleUrls: false });
  window.roomcast = client; // for the browser tests and the curious

  client.addEventListener("state", (e) => {
    const { state, node, resume, code, error } = e.detail;
    if (state === "failed") showState(state, error || "");
    else if (state === "disconnected") showState(state, CLOSES[code] || (code ? `closed with ${code}` : ""));
    else showState(state, state === "reconnecting" || state === "connecting" ? "" : $("why").textContent);
    if (state !== "connected") {
      // What we showed belongs to a connection that is gone: do not pretend it is current.
      $("node").textContent = "–";
      $("members").replaceChildren();
      $("count").textContent = "–";
    }
    if (node) $("node").textContent = node;
    if (state === "connected") {
      renderMembers();
      if (resume && resume[room]) {
        const r = resume[room];
        $("why").textContent = r.recovered
          ? `resumed: recovered (${r.replayed} replayed)`
          : `resumed: NOT recovered — history window exceeded (${r.replayed} replayed)`;
        $("resume").dataset.recovered = String(!!r.recovered);
      } else {
        $("why").textContent = "";
      }
    }
  });

  const shown = new Set(); // seqs on the page: history and live never show one twice
  let oldest = null; // lowest seq shown, where "load older" continues

  function render(m) {
    const li = document.createElement("li");
    li.className = "msg";
    li.dataset.seq = String(m.seq);
    const text = m.data && typeof m.data === "object" && "text" in m.data ? m.data.text : JSON.stringify(m.data);
    li.innerHTML = `<span class="ts"></span><span class="seq">#${m.seq}</span><span class="from"></span><span class="text"></span>`;
    li.querySelector(".ts").textContent = time(m.ts);
    li.querySelector(".from").textContent = `${m.sender}:`;
    li.querySelector(".text").textContent = text;
    return li;
  }

  function show(m) {
    if (shown.has(m.seq)) return;
    shown.add(m.seq);
    if (oldest === null || m.seq < oldest) oldest = m.seq;
    const list = $("messages");
    // Keep seq order: a history page goes above what is shown, live messages below.
    const after = [...list.querySelectorAll("li.msg")].find((li) => Number(li.dataset.seq) > m.seq);
    list.insertBefore(render(m), after ?? null);
    if (!after) list.scrollTop = list.scrollHeight;
  }

  function notice(text) {
    const li = document.createElement("li");
    li.className = "notice";
    li.textContent = `${time(Date.now())} ${text}`;
    $("messages").appendChild(li);
    $("messages").scrollTop = $("messages").scrollHeight;
  }

  client.addEventListener("message", (e) => show(e.detail));
  client.addEventListener("left", (e) => {
    if (e.detail.room === room) showState("left", `removed from the room (${e.detail.reason})`);
  });

  // The room's last messages when the page opens, and older pages on demand (history API).
  async function loadOlder(before) {
    const page = await client.history(room, { before, limit: 30 });
    for (const m of page.messages) show(m);
    $("older").hidden = !page.more;
  }
  $("older").addEventListener("click", () => {
    if (oldest !== null) loadOlder(oldest).catch((err) => console.error("history failed", err));
  });

  client.addEventListener("presence", (e) => {
    const f = e.detail;
    if (f.room !== room) return;
    if (!f.sync) {
      for (const u of f.joined) notice(`${u} joined`);
      for (const u of f.left) notice(`${u} left`);
    }
    renderMembers();
  });

  function renderMembers() {
    if (!client.ready) return;
    const users = client.membersOf(room);
    const counts = client.countsOf(room);
    $("count").textContent = String(users ? users.length : counts?.users ?? 0);
    $("members").replaceChildren(...(users ?? []).map((u) => {
      const li = document.createElement("li");
      li.dataset.user = u;
      li.textContent = u;
      return li;
    }));
  }

  $("form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    if (!text) return;
    $("text").value = "";
    client.publish(room, { text }).catch((err) => notice(`not sent: ${err.message}`));
  });
  $("drop").addEventListener("click", () => client.dropConnection());

  client.connect().then(() => client.join(room))
    .then((joined) => { renderMembers(); return loadOlder(joined.seq + 1); })
    .catch((err) => showState("failed", String(err.message || err)));
}
