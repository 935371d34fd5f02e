// tracegate console: the live flag feed, case triage, charts, code and institution views.
// Plain browser JavaScript, no build step. The API key lives in this tab's sessionStorage and
// travels only in the Authorization header: the flag stream is read with fetch() and a
// streaming reader, because EventSource cannot send headers (it would need the key in the URL).
"use strict";
(() => {
  const KEY = "tracegate.key";
  const TZ = "Asia/Shanghai";
  const KINDS = ["duplicate_payment", "split_overuse", "split_cross_institution", "missing_code",
    "invalid_code", "quantity_mismatch"];
  const STATUSES = ["new", "investigating", "escalated", "closed"];
  const OPEN = ["new", "investigating", "escalated"];
  // CONTRACT §7; the API refuses anything else with 409 INVALID_TRANSITION.
  const TRANSITIONS = { new: ["investigating", "closed"], investigating: ["escalated", "closed"],
    escalated: ["closed"], closed: ["investigating"] };
  const RESOLUTIONS = ["confirmed_fraud", "legitimate", "data_error"];
  const COLORS = ["#0b6bcb", "#b42318", "#067647", "#b54708", "#6941c6", "#475467", "#c11574",
    "#0e9384"];
  const FEED_ROWS = 500;
  const SERIES_EVERY_MS = 5000;

  const clock = new Intl.DateTimeFormat("sv-SE", { timeZone: TZ, year: "numeric",
    month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    hour12: false });
  const when = (iso) => (iso ? clock.format(new Date(iso)) : "—");

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "data") Object.assign(node.dataset, value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // ---- the API ---------------------------------------------------------------------------
  let key = sessionStorage.getItem(KEY);

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, options = {}) {
    const headers = { Authorization: `Bearer ${key}` };
    if (options.body) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { ...options, headers, cache: "no-store" });
    const json = (response.headers.get("content-type") || "").includes("json");
    const body = json ? await response.json() : null;
    if (response.status === 401) signOut("The key was refused: unknown or revoked.");
    if (!response.ok) {
      const error = (body && body.error) || {};
      throw new ApiError(response.status, error.code, error.message || response.statusText);
    }
    return body;
  }

  // ---- sign-in ---------------------------------------------------------------------------
  async function signIn(candidate) {
    const response = await fetch("/v1/me", { headers: { Authorization: `Bearer ${candidate}` },
      cache: "no-store" });
    if (response.status === 401) throw new Error("Unknown or revoked API key.");
    if (!response.ok) throw new Error(`The API answered ${response.status}; try again.`);
    const me = await response.json();
    if (!["ops", "regulator", "admin"].includes(me.role)) {
      throw new Error(`A ${me.role} key cannot use the console: sign in with an ops or ` +
        "regulator key.");
    }
    key = candidate;
    sessionStorage.setItem(KEY, candidate);
    start(me);
  }

  function signOut(message = "") {
    sessionStorage.removeItem(KEY);
    key = null;
    stopFeed();
    clearInterval(seriesTimer);
    seriesTimer = null;
    $("app").hidden = true;
    $("who").hidden = true;
    $("sign-in").hidden = false;
    $("sign-in-error").textContent = message;
  }

  function start(me) {
    $("sign-in").hidden = true;
    $("app").hidden = false;
    $("who").hidden = false;
    $("who-text").textContent = `key #${me.key_id} · ${me.role}`;
    $("key").value = "";
    startFeed();
  }

  // ---- tabs ------------------------------------------------------------------------------
  const onShow = { cases: loadCases, charts: startCharts };

  function show(tab) {
    for (const button of document.querySelectorAll("#tabs button")) {
      button.classList.toggle("active", button.dataset.tab === tab);
    }
    for (const section of document.querySelectorAll(".tab")) {
      section.hidden = section.id !== `tab-${tab}`;
    }
    if (onShow[tab]) onShow[tab]();
  }

  // ---- the live feed (SSE over fetch) ------------------------------------------------------
  let feed = null;

  function stopFeed() {
    if (feed) feed.abort();
    feed = null;
  }

  function feedQuery() {
    const query = new URLSearchParams();
    if ($("feed-kind").value) query.set("kind", $("feed-kind").value);
    const institution = $("feed-institution").value.trim().toUpperCase();
    if (institution) query.set("institution_id", institution);
    for (const box of document.querySelectorAll("#feed-status input:checked")) {
      query.append("status", box.value);
    }
    return query;
  }

  function startFeed() {
    stopFeed();
    feed = new AbortController();
    $("feed-rows").replaceChildren();
    $("feed-empty").hidden = false;
    follow(feedQuery(), addToFeed, feed.signal);
  }

  function feedState(text, live = false) {
    $("feed-state").textContent = text;
    $("feed-state").classList.toggle("live", live);
  }

  async function follow(query, onFlag, signal) {
    let lastId = null;
    while (!signal.aborted && key) {
      try {
        const headers = { Authorization: `Bearer ${key}`, Accept: "text/event-stream" };
        if (lastId) headers["Last-Event-ID"] = lastId;
        const response = await fetch(`/v1/flags/stream?${query}`, { headers, signal,
          cache: "no-store" });
        if (response.status === 401) return signOut("The key was refused: unknown or revoked.");
        if (!response.ok) throw new Error(`stream answered ${response.status}`);
        feedState("live", true);
        await readEvents(response.body, (event) => {
          if (event.event !== "flag" || !event.data) return;
          lastId = event.id || lastId;
          onFlag(JSON.parse(event.data));
        });
      } catch (error) {
        if (signal.aborted) return;
        feedState(`reconnecting… (${error.message})`);
      }
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }

  async function readEvents(body, onEvent) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        onEvent(parseEvent(buffer.slice(0, end)));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  function parseEvent(block) {
    const event = { event: "message", id: null, data: [] };
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") event.data.push(value);
      else event[field] = value;
    }
    event.data = event.data.join("\n");
    return event;
  }

  function flagRow(flag, fresh = false) {
    return el("tr", { class: fresh ? "flag fresh" : "flag", data: { flagId: flag.flag_id },
      onclick: () => openCase(flag.flag_id) },
    el("td", {}, when(flag.detected_at)), el("td", {}, flag.kind),
    el("td", { class: `sev-${flag.severity}` }, flag.severity),
    el("td", { class: "mono" }, flag.trace_code || "—"), el("td", {}, flag.institution_id),
    el("td", { class: "mono" }, `${flag.settlement_id} #${flag.line_no}`),
    el("td", {}, statusBadge(flag.status, flag.resolution)));
  }

  function statusBadge(status, resolution) {
    const text = resolution ? `${status} (${resolution})` : status;
    return el("span", { class: `status status-${status}`, data: { status } }, text);
  }

  function addToFeed(flag) {
    $("feed-empty").hidden = true;
    const rows = $("feed-rows");
    rows.prepend(flagRow(flag, true));
    while (rows.children.length > FEED_ROWS) rows.lastChild.remove();
  }

  function refreshRows(flag) {
    for (const row of document.querySelectorAll(`tr[data-flag-id="${flag.flag_id}"]`)) {
      row.lastChild.replaceChildren(statusBadge(flag.status, flag.resolution));
    }
  }

  // ---- cases -----------------------------------------------------------------------------
  async function loadCases() {
    try {
      $("summary").replaceChildren(...summaryBoxes(await api("/v1/flags/summary")));
      $("case-rows").replaceChildren();
      await openCases(null, $("case-rows"), $("cases-more"))();
    } catch (error) {
      $("summary").replaceChildren(el("p", { class: "error" }, error.message));
    }
  }

  // Open cases oldest first (a queue), a page at a time: returns the loader of the next page.
  function openCases(institution, rows, more) {
    let cursor = null;
    const next = async () => {
      const query = new URLSearchParams({ limit: "100" });
      for (const status of OPEN) query.append("status", status);
      if (institution) query.set("institution_id", institution);
      if (cursor) query.set("cursor", cursor);
      const page = await api(`/v1/flags?${query}`);
      rows.append(...page.items.map((flag) => flagRow(flag)));
      cursor = page.next_cursor;
      more.hidden = !cursor;
    };
    more.onclick = () => next().catch((error) => { more.textContent = error.message; });
    return next;
  }

  function summaryBoxes(summary) {
    const box = (label, value) => el("div", { class: "box" }, el("b", {}, value), label);
    const rate = summary.false_alert_rate;
    return [
      box("open cases", summary.open),
      ...OPEN.map((s) => box(s, summary.open_by_status[s])),
      box("open < 1 day", summary.open_by_age.under_1d),
      box("open 1-7 days", summary.open_by_age.from_1d_to_7d),
      box("open 7-30 days", summary.open_by_age.from_7d_to_30d),
      box("open > 30 days", summary.open_by_age.over_30d),
      box("closed", summary.closed),
      box("false-alert rate (closed as legitimate)",
        rate === null ? "—" : `${(rate * 100).toFixed(1)} %`),
    ];
  }

  // ---- one case --------------------------------------------------------------------------
  async function openCase(flagId) {
    const dialog = $("case");
    $("case-body").replaceChildren(el("p", {}, "Loading…"));
    if (!dialog.open) dialog.showModal();
    try {
      renderCase(await api(`/v1/flags/${encodeURIComponent(flagId)}`));
    } catch (error) {
      $("case-body").replaceChildren(el("p", { class: "error" }, error.message));
    }
  }

  function renderCase(found) {
    $("case-body").replaceChildren(
      el("h2", {}, `${found.kind} `, el("span", { class: `sev-${found.severity}` },
        found.severity), " ", statusBadge(found.status, found.resolution)),
      el("p", { class: "note mono" }, found.flag_id, ` · detected ${when(found.detected_at)}`,
        ` · updated ${when(found.updated_at)}`),
      pair(found), timeline(found), history(found), triageForm(found));
  }

  function facts(rows) {
    return el("dl", {}, rows.flatMap(([name, value]) => [el("dt", {}, name),
      el("dd", {}, value ?? "—")]));
  }

  function pair(found) {
    const first = found.first_payment;
    return el("div", { class: "pair" },
      el("div", { class: "first" }, el("h4", {}, "First payment"), first
        ? facts([["settlement", first.settlement_id], ["institution", first.institution_id],
          ["paid at", when(first.paid_at)]])
        : el("p", { class: "note" }, "No earlier payment: this finding is about the line itself.")),
      el("div", { class: "repeat" }, el("h4", {}, "This repeat"),
        facts([["settlement", `${found.settlement_id} #${found.line_no}`],
          ["institution", found.institution_id], ["settled at", when(found.settled_at)],
          ["trace code", found.trace_code], ["patient_ref", found.patient_ref]])));
  }

  function timeline(found) {
    const first = found.first_payment && found.first_payment.settlement_id;
    const items = found.payments.map((p) => ({ at: p.at, recorded: p.recorded_at,
      cls: p.settlement_id === found.settlement_id ? "repeat" : p.settlement_id === first
        ? "first" : "", text: `paid at ${p.institution_id} · ${p.settlement_id} #${p.line_no}` +
        (p.duplicate ? " · duplicate" : "") + (p.units ? ` · ${p.units} units` : "") }));
    if (!found.payments.some((p) => p.settlement_id === found.settlement_id)) {
      items.push({ at: found.settled_at, detected: found.detected_at, cls: "repeat",
        text: `refused at ${found.institution_id} · ${found.settlement_id} #${found.line_no}` });
    }
    items.sort((a, b) => new Date(a.at) - new Date(b.at));
    const lookup = found.trace_code ? el("button", { type: "button",
      onclick: () => { $("case").close(); lookUpCode(found.trace_code); } },
    "Full history of this code") : null;
    return el("div", {}, el("h3", {}, "The code's payments"),
      el("ol", { class: "timeline" }, items.map((item) => el("li", { class: item.cls },
        el("b", {}, when(item.at)), " ", item.text, el("span", { class: "note" },
          item.detected ? ` (flagged ${when(item.detected)})` : ` (recorded ${when(item.recorded)})`)))),
    lookup);
  }

  function history(found) {
    const entries = found.history.map((h) => el("li", {}, el("b", {}, when(h.at)), " ",
      statusBadge(h.status, h.resolution), ` by key #${h.by.key_id} (${h.by.role})`,
      h.note ? `: ${h.note}` : ""));
    return el("div", {}, el("h3", {}, "Triage history"), entries.length
      ? el("ul", { class: "case-history" }, entries)
      : el("p", { class: "note" }, "Not triaged yet."));
  }

  function triageForm(found) {
    const next = el("select", { id: "case-status" },
      TRANSITIONS[found.status].map((s) => el("option", { value: s }, s)));
    const resolution = el("select", { id: "case-resolution" },
      RESOLUTIONS.map((r) => el("option", { value: r }, r)));
    const note = el("textarea", { id: "case-note", maxlength: "2000",
      placeholder: "note (optional)" });
    const message = el("span", { id: "case-message", role: "status" });
    const sync = () => { resolution.disabled = next.value !== "closed"; };
    next.addEventListener("change", sync);
    sync();
    const apply = el("button", { type: "submit", id: "case-apply" }, "Apply");
    const form = el("form", { class: "triage", onsubmit: async (event) => {
      event.preventDefault();
      apply.disabled = true;
      const body = { status: next.value };
      if (next.value === "closed") body.resolution = resolution.value;
      if (note.value.trim()) body.note = note.value.trim();
      try {
        const updated = await api(`/v1/flags/${encodeURIComponent(found.flag_id)}`,
          { method: "PATCH", body: JSON.stringify(body) });
        renderCase({ ...updated, payments: found.payments });
        refreshRows(updated);
      } catch (error) {
        message.textContent = error.message;
        message.className = "error";
        apply.disabled = false;
      }
    } }, el("label", {}, "Move to ", next), el("label", {}, "Resolution ", resolution),
    el("label", {}, "Note ", note), apply, message);
    return form;
  }

  // ---- charts ----------------------------------------------------------------------------
  let seriesTimer = null;
  const charts = {};

  function startCharts() {
    if (seriesTimer) return;
    drawSeries();
    seriesTimer = setInterval(drawSeries, SERIES_EVERY_MS);
  }

  async function drawSeries() {
    let series;
    try {
      series = await api("/v1/ops/series");
    } catch (error) {
      $("sources").replaceChildren(el("span", { class: "down" }, error.message));
      return;
    }
    $("sources").replaceChildren(...series.sources.map((s) => el("span",
      { class: s.up ? "up" : "down", title: s.error || "" }, `${s.source}: ${s.up ? "up" : "down"}`)));
    const t = series.t;
    const labelled = (map) => Object.entries(map).map(([label, values]) => ({ label, values }));
    chart("chart-codes", t, [{ label: "codes/s", values: series.codes_per_s }]);
    chart("chart-flags", t, labelled(series.flags_per_s));
    chart("chart-gate", t, [{ label: "p50 ms", values: series.gate_p50_ms },
      { label: "p99 ms", values: series.gate_p99_ms }]);
    chart("chart-lag", t, labelled(series.consumer_lag).map((s) => ({ ...s,
      label: `partition ${s.label}` })));
    chart("chart-dlq", t, [{ label: "DLQ events", values: series.dlq_total }]);
  }

  function chart(id, t, lines) {
    const target = $(id);
    if (!lines.length) lines = [{ label: "no data yet", values: t.map(() => null) }];
    const labels = lines.map((line) => line.label).join("|");
    const data = [t, ...lines.map((line) => line.values)];
    const existing = charts[id];
    if (existing && existing.labels === labels) {
      existing.plot.setData(data);
      return;
    }
    if (existing) existing.plot.destroy();
    // Times on the axis and in the legend as Asia/Shanghai wall-clock time, 24-hour.
    const stamp = (ts) => clock.format(new Date(ts * 1e3));
    const options = {
      width: Math.max(320, target.clientWidth || 440), height: 200,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), TZ),
      series: [{ label: "Time", value: (u, ts) => (ts == null ? "--" : stamp(ts)) },
        ...lines.map((line, i) => ({ label: line.label, spanGaps: true, width: 1.5,
          stroke: COLORS[i % COLORS.length] }))],
      axes: [{ values: (u, splits) => splits.map((ts) => stamp(ts).slice(11, 19)) },
        { size: 60 }],
    };
    charts[id] = { labels, plot: new uPlot(options, data, target) };
  }

  // ---- code lookup -----------------------------------------------------------------------
  async function lookUpCode(code) {
    show("code");
    $("code-input").value = code;
    const out = $("code-result");
    out.replaceChildren(el("p", {}, "Looking up…"));
    try {
      const found = await api(`/v1/codes/${encodeURIComponent(code.trim())}`);
      out.replaceChildren(
        facts([["canonical", found.trace_code], ["format", found.format], ["status", found.status]]),
        el("h3", {}, "History (event time; recorded time beside it)"),
        el("table", {}, el("thead", {}, el("tr", {}, ["At", "Recorded", "Event", "Institution",
          "Settlement", "Details"].map((h) => el("th", {}, h)))),
        el("tbody", {}, found.events.map((e) => el("tr", {}, el("td", {}, when(e.at)),
          el("td", {}, when(e.recorded_at)), el("td", {}, e.type),
          el("td", {}, e.institution_id), el("td", { class: "mono" }, `${e.settlement_id} #${e.line_no}`),
          el("td", {}, [e.duplicate ? "duplicate" : "", e.units ? `${e.units} units` : "",
            e.reversal_id ? `reversal ${e.reversal_id}` : ""].filter(Boolean).join(" · ")))))),
        el("h3", {}, "Flags"), flagTable(found.flags));
    } catch (error) {
      out.replaceChildren(el("p", { class: "error" }, error.status === 404
        ? `Never settled: ${error.message}` : error.message));
    }
  }

  function flagTable(flags) {
    if (!flags.length) return el("p", { class: "note" }, "None.");
    return el("table", { class: "flags" }, el("tbody", {}, flags.map((flag) => flagRow(flag))));
  }

  // ---- institution -----------------------------------------------------------------------
  async function showInstitution(institution) {
    const out = $("institution-result");
    out.replaceChildren(el("p", {}, "Loading…"));
    const parts = [];
    try {
      const found = await api(`/v1/institutions/${encodeURIComponent(institution)}`);
      parts.push(facts([["name", found.name], ["kind", found.kind], ["region", found.region],
        ["go-live", when(found.effective_go_live)], ["payments", found.counts.payments],
        ["flags", Object.entries(found.counts.flags).map(([k, n]) => `${k}: ${n}`).join(", ")
          || "none"]]));
    } catch (error) {
      parts.push(el("p", { class: "note" }, error.status === 403
        ? "This key's role cannot read institution records (admin and regulator can); its cases follow."
        : error.message));
      if (error.status === 404) return out.replaceChildren(...parts);
    }
    try {
      const query = new URLSearchParams({ institution_id: institution });
      const summary = await api(`/v1/flags/summary?${query}`);
      const rows = el("tbody", {});
      const more = el("button", { type: "button", hidden: true }, "More");
      parts.push(el("h3", {}, "Cases"), el("div", { class: "summary" }, summaryBoxes(summary)),
        el("h3", {}, "Open cases, oldest first"), el("table", { class: "flags" }, rows), more);
      out.replaceChildren(...parts);
      await openCases(institution, rows, more)();
    } catch (error) {
      out.replaceChildren(...parts, el("p", { class: "error" }, error.message));
    }
  }

  // ---- wiring ----------------------------------------------------------------------------
  function wire() {
    $("feed-kind").append(...KINDS.map((kind) => el("option", { value: kind }, kind)));
    $("feed-status").append(...STATUSES.map((status) => el("label", {},
      el("input", { type: "checkbox", value: status }), ` ${status}`)));
    $("feed-filters").addEventListener("submit", (event) => { event.preventDefault(); startFeed(); });
    $("sign-in-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      $("sign-in-error").textContent = "";
      try {
        await signIn($("key").value.trim());
      } catch (error) {
        $("sign-in-error").textContent = error.message;
      }
    });
    $("sign-out").addEventListener("click", () => signOut());
    for (const button of document.querySelectorAll("#tabs button")) {
      button.addEventListener("click", () => show(button.dataset.tab));
    }
    $("code-form").addEventListener("submit", (event) => {
      event.preventDefault();
      lookUpCode($("code-input").value);
    });
    $("institution-form").addEventListener("submit", (event) => {
      event.preventDefault();
      showInstitution($("institution-input").value.trim().toUpperCase());
    });
  }

  wire();
  if (key) signIn(key).catch((error) => signOut(error.message));
})();
