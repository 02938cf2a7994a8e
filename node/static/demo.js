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

function showState(state) {
  stateEl.textContent = state;
  stateEl.className = `badge ${state}`;
}

if (!token) {
  showState("failed");
  $("resume").textContent = "add ?token=<JWT> to the URL (make run prints a ready-made link)";
} else {
  const client = new RoomcastClient(nodes, token, { shuffleUrls: false });
  window.roomcast = client; // for the browser tests and the curious

  client.addEventListener("state", (e) => {
    const { state, node, resume } = e.detail;
    showState(state);
    if (node) $("node").textContent = node;
    if (state === "connected" && resume && resume[room]) {
      const r = resume[room];
      $("resume").textContent = r.recovered
        ? `resumed: recovered (${r.replayed} replayed)`
        : `resumed: NOT recovered — history window exceeded (${r.replayed} replayed)`;
      $("resume").dataset.recovered = String(!!r.recovered);
    }
  });

  const shown = new Set(); // seqs on the page: history and live never show one twice
  let oldest = null; // lowest seq shown, where "load older" continues

  function render(m) {
    const li = document.createElement("li");
    li.dataset.seq = String(m.seq);
    const text = m.data && typeof m.data === "object" && "text" in m.data ? m.data.text : JSON.stringify(m.data);
    li.innerHTML = `<span class="seq">#${m.seq}</span><span class="from"></span><span class="text"></span>`;
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
    const after = [...list.children].find((li) => Number(li.dataset.seq) > m.seq);
    list.insertBefore(render(m), after ?? null);
    if (!after) list.scrollTop = list.scrollHeight;
  }

  client.addEventListener("message", (e) => show(e.detail));

  // The room's last messages when the page opens, and older pages on demand (history API).
  async function loadOlder(before) {
    const page = await client.history(room, { before, limit: 30 });
    for (const m of page.messages) show(m);
    $("older").hidden = !page.more;
  }
  $("older").addEventListener("click", () => {
    if (oldest !== null) loadOlder(oldest).catch((err) => console.error("history failed", err));
  });

  client.addEventListener("presence", () => renderMembers());

  function renderMembers() {
    const users = client.membersOf(room);
    $("count").textContent = String(users.length);
    $("members").replaceChildren(...users.map((u) => {
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
    client.publish(room, { text }).catch((err) => console.error("publish failed", err));
  });
  $("drop").addEventListener("click", () => client.dropConnection());

  client.connect().then(() => client.join(room))
    .then((joined) => { renderMembers(); return loadOlder(joined.seq + 1); })
    .catch((err) => { showState("failed"); $("resume").textContent = String(err.message || err); });
}
