// The roomcast operator console (docs/admin.md): served on a node's internal port; everything it
// shows comes from POST /admin/* and /api/* with the API key typed above (kept for this tab).
const $ = (id) => document.getElementById(id);
let key = sessionStorage.getItem("roomcast-api-key") || "";
let selected = null;
const history = { deliveries: [], publishes: [] }; // cluster-wide rates, one sample per second
let last = null; // previous stats sample: {t, byNode}

async function call(path, body = {}) {
  const res = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json", "X-API-Key": key }, body: JSON.stringify(body) });
  const data = await res.json();
  if (!res.ok) throw new Error(data.error ? `${data.error.code}: ${data.error.message}` : `HTTP ${res.status}`);
  return data;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function chart(canvas, values) {
  const ctx = canvas.getContext("2d");
  const { width: w, height: h } = canvas;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...values);
  const step = w / 59; // the last 60 samples; the newest at the right edge
  const at = (i) => [w - (values.length - 1 - i) * step, h - 4 - (values[i] / max) * (h - 8)];
  ctx.fillStyle = "#2456c733";
  ctx.strokeStyle = "#2456c7";
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.moveTo(at(0)[0], h);
  values.forEach((_, i) => ctx.lineTo(...at(i)));
  ctx.lineTo(w, h);
  ctx.closePath();
  ctx.fill();
  ctx.beginPath();
  values.forEach((_, i) => (i ? ctx.lineTo(...at(i)) : ctx.moveTo(...at(i))));
  ctx.stroke();
  ctx.fillStyle = "#6b7785";
  ctx.font = "11px system-ui";
  ctx.fillText(`max ${Math.round(max).toLocaleString()}/s`, 4, 12);
}

function renderNodes(nodes, now) {
  $("nodecount").textContent = String(nodes.length);
  const byNode = Object.fromEntries(nodes.map((n) => [n.node, n]));
  let dps = 0, pps = 0;
  $("nodes").replaceChildren(...nodes.map((n) => {
    const prev = last && last.byNode[n.node];
    const lag = prev && n.lag_count > prev.lag_count ? ((n.lag_sum - prev.lag_sum) / (n.lag_count - prev.lag_count)) * 1000 : null;
    if (prev) {
      const dt = (now - last.t) / 1000;
      dps += Math.max(0, n.delivered - prev.delivered) / dt;
      pps += Math.max(0, n.received - prev.received) / dt;
    }
    const tr = document.createElement("tr");
    tr.dataset.node = n.id;
    tr.append(cell(`${n.id}${n.draining ? " (draining)" : ""}`), cell(String(n.connections), "num"), cell(String(n.rooms), "num"),
      cell(lag === null ? "–" : lag.toFixed(1), "num"), cell(n.nats ? "up" : "down"));
    const td = document.createElement("td");
    const b = document.createElement("button");
    b.className = "danger";
    b.textContent = "Drain";
    b.disabled = n.draining;
    b.addEventListener("click", () => {
      if (confirm(`Drain ${n.id}? Its clients resume on the other nodes.`)) call("/admin/drain", { node: n.node }).catch(showError);
    });
    td.append(b);
    tr.append(td);
    return tr;
  }));
  if (last) {
    for (const [k, v] of [["deliveries", dps], ["publishes", pps]]) {
      history[k].push(v);
      if (history[k].length > 60) history[k].shift();
    }
    $("dps").textContent = Math.round(dps).toLocaleString();
    $("pps").textContent = Math.round(pps).toLocaleString();
    chart($("deliveries"), history.deliveries);
    chart($("publishes"), history.publishes);
  }
  last = { t: now, byNode };
}

function renderRooms(rooms) {
  const entries = Object.entries(rooms).sort((a, b) => b[1].users - a[1].users).slice(0, 200);
  $("roomcount").textContent = String(Object.keys(rooms).length);
  $("rooms").replaceChildren(...entries.map(([room, r]) => {
    const tr = document.createElement("tr");
    tr.className = `room${room === selected ? " selected" : ""}`;
    tr.dataset.room = room;
    tr.append(cell(room), cell(String(r.users), "num"), cell(String(r.connections), "num"));
    tr.addEventListener("click", () => { selected = room; refresh(); });
    return tr;
  }));
}

async function renderRoom() {
  if (!selected) return;
  $("room").textContent = selected;
  const [presence, page] = await Promise.all([call(`/admin/presence/${selected}`), call("/api/history", { room: selected, limit: 10 })]);
  const users = Object.keys(presence.members).sort();
  $("members").textContent = users.length ? users.join(", ") : "nobody";
  $("messages").replaceChildren(...page.messages.map((m) => {
    const li = document.createElement("li");
    li.textContent = `#${m.seq} ${new Date(m.ts).toLocaleTimeString()} ${m.from}: ${JSON.stringify(m.data)}`;
    return li;
  }));
}

function showError(err) {
  $("status").textContent = String(err.message || err);
  $("status").dataset.ok = "false";
}

async function refresh() {
  if (!key) return;
  try {
    const [stats, rooms] = await Promise.all([call("/admin/stats"), call("/admin/rooms")]);
    renderNodes(stats.nodes, Date.now());
    renderRooms(rooms.rooms);
    await renderRoom();
    $("status").textContent = `live · ${new Date().toLocaleTimeString()}`;
    $("status").dataset.ok = "true";
  } catch (err) {
    showError(err);
  }
}

$("keyform").addEventListener("submit", (e) => {
  e.preventDefault();
  key = $("key").value.trim();
  sessionStorage.setItem("roomcast-api-key", key);
  $("key").value = "";
  last = null;
  refresh();
});
$("disconnect").addEventListener("submit", (e) => {
  e.preventDefault();
  call("/api/disconnect", { user: $("user").value.trim(), ban: $("ban").checked })
    .then((r) => { $("disconnected").textContent = `closed ${r.closed} connection(s) on ${r.nodes} node(s)${r.banned ? ", banned" : ""}`; })
    .catch((err) => { $("disconnected").textContent = String(err.message || err); });
});
setInterval(refresh, 1000);
refresh();
