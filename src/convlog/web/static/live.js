// convlog serve: the Live page. Opens the server-sent events of /api/events (the URL is
// in the table's data-events, with the page's filters) and puts each record on top of
// the table. A record is untrusted text: every cell is set with textContent, never as
// HTML. EventSource reconnects by itself, sending the last seq as Last-Event-ID.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("live");
  if (!table) return;
  const body = table.tBodies[0];
  const limit = Number(table.dataset.rows) || 200;
  const state = document.getElementById("live-state");
  const say = (text, cls) => { state.textContent = text; state.className = cls; };

  const hidden = new Set(["type", "convlog", "session_id", "session", "conversation_id", "context_id",
    "ContextId", "thread_id"]);
  const str = (v) => (typeof v === "string" && v ? v : null);
  // The text tail shows (convlog.readers.tail.record_text), near enough for a glance.
  const textOf = (record) => {
    const data = record.data;
    if (data && typeof data === "object") {
      for (const key of ["content", "text", "delta", "summary"]) {
        if (typeof data[key] === "string") return data[key];
      }
      const rest = Object.fromEntries(Object.entries(data).filter(([k]) => !hidden.has(k)));
      return Object.keys(rest).length ? JSON.stringify(rest) : "";
    }
    return data === undefined || data === null ? "" : String(data);
  };
  const cell = (row, cls, text) => {
    const td = row.insertCell();
    td.className = cls;
    td.textContent = text;
    return td;
  };

  const source = new EventSource(table.dataset.events);
  source.addEventListener("open", () => say("connected: new records appear on top", "open"));
  source.addEventListener("error", () => say(
    source.readyState === EventSource.CLOSED ? "disconnected (reload the page)" : "reconnecting…", "closed"));
  source.addEventListener("message", (event) => {
    let record;
    try { record = JSON.parse(event.data); } catch { return; }
    const meta = record.meta && typeof record.meta === "object" ? record.meta : {};
    const row = document.createElement("tr");
    row.className = "record";
    row.id = `live-seq-${event.lastEventId}`;
    row.dataset.seq = event.lastEventId;
    row.dataset.kind = String(record.kind ?? "");
    cell(row, "seq", String(record.seq ?? event.lastEventId));
    const ts = str(record.ts);
    const when = cell(row, "time", ts ? ts.slice(11, 23) : "?");
    if (ts) when.title = ts;
    cell(row, "kind", String(record.kind ?? "?"));
    const session = cell(row, "session", "");
    if (str(record.session)) {
      const link = document.createElement("a");
      link.href = `/sessions/${encodeURIComponent(record.session)}`;
      link.textContent = record.session;
      session.append(link);
    } else {
      session.textContent = "-";
    }
    cell(row, "speaker", str(meta.sender) || str(meta.role) || str(record.topic) || str(record.source) || "-");
    cell(row, "text", textOf(record));
    body.prepend(row);
    while (body.rows.length > limit) body.deleteRow(-1);
  });
});
