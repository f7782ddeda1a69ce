// The renkei status page: fetches /api/status (and /api/history for the
// trends) from the meta server that served it and redraws in place; the
// page itself is never reloaded. Everything is built with DOM calls and
// textContent, so nothing a host reports is ever parsed as HTML.
"use strict";

const page = { loadedAt: Date.now(), updates: 0, lastOk: 0, refreshMs: 1000, status: null, history: null };
// For tests and the curious: how many times the page redrew since it loaded.
window.renkeiPage = page;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, String(v));
    else e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
}

function rate(n) {
  const v = Number(n);
  if (v >= 1e9) return (v / 1e9).toFixed(2) + " GB/s";
  if (v >= 1e6) return (v / 1e6).toFixed(1) + " MB/s";
  if (v >= 1e3) return (v / 1e3).toFixed(1) + " kB/s";
  return v.toFixed(0) + " B/s";
}

function ago(ms, now) {
  if (!ms) return "never";
  const s = Math.max(0, (now - ms) / 1000);
  if (s < 120) return s.toFixed(1) + " s ago";
  if (s < 7200) return (s / 60).toFixed(0) + " min ago";
  return (s / 3600).toFixed(1) + " h ago";
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function micros(us) {
  return us >= 10000 ? (us / 1000).toFixed(1) + " ms" : (us / 1000).toFixed(2) + " ms";
}

function renderSummary(st) {
  const live = st.hosts.filter((h) => h.info.alive).length;
  const failing = st.hosts.filter((h) => h.checks.some((c) => !c.ok)).length;
  const free = st.hosts.filter((h) => h.info.alive).reduce((a, h) => a + h.info.free, 0);
  const cap = st.hosts.filter((h) => h.info.alive).reduce((a, h) => a + h.info.capacity, 0);
  const s = document.getElementById("summary");
  s.dataset.live = live;
  s.dataset.total = st.hosts.length;
  s.textContent = `${live} of ${st.hosts.length} PoPs live` +
    (failing ? `, ${failing} failing checks` : "") +
    ` · ${bytes(free)} free of ${bytes(cap)}` +
    ` · meta server up since ${new Date(st.meta_started_ms).toLocaleString()}`;
}

function checksCell(h) {
  const td = el("td", { class: "checks" });
  if (h.checks.length === 0) {
    td.dataset.checks = "unknown";
    td.append("not reported yet");
    return td;
  }
  const failing = h.checks.filter((c) => !c.ok);
  td.dataset.checks = failing.length ? "failing" : "ok";
  td.dataset.failing = failing.map((c) => c.name).join(",");
  for (const c of h.checks) {
    const took = micros(c.duration_us);
    td.append(el("span", { class: "check " + (c.ok ? "ok" : "fail"), "data-check": c.name, title: `${c.detail} (${took})` },
      c.name + (c.ok ? " \u2713" : " \u2717")));
  }
  for (const c of failing) {
    td.append(el("div", { class: "reason", "data-check": c.name }, `${c.name}: ${c.detail}`));
  }
  const when = "checked " + ago(h.checks_at_ms, Date.now());
  td.append(el("div", { class: "note" }, h.info.alive ? when : when + " (host down: last known results)"));
  return td;
}

function renderPops(st) {
  const now = st.at_ms;
  const rows = st.hosts.map((h) => {
    const i = h.info;
    const state = i.alive ? "live" : "down";
    const freePct = i.capacity ? Math.round((100 * i.free) / i.capacity) : 0;
    const bar = el("span", { class: "bar", title: freePct + "% free" });
    const fill = el("span");
    fill.style.width = freePct + "%";
    bar.append(fill);
    const problems = el("td", { class: "problems" });
    for (const p of i.problems) problems.append(el("div", { class: "problem" }, p));
    return el("tr", { class: "pop", "data-host": i.host, "data-site": i.site, "data-state": state },
      el("td", {}, i.host),
      el("td", {}, i.site),
      el("td", {}, i.addr),
      el("td", { class: "state " + state }, i.alive ? "LIVE" : "DOWN"),
      el("td", { class: "heartbeat", title: i.last_heartbeat_ms ? new Date(i.last_heartbeat_ms).toISOString() : "" },
        ago(i.last_heartbeat_ms, now)),
      el("td", { class: "num" }, bytes(i.capacity)),
      el("td", { class: "num" }, bytes(i.free), bar),
      el("td", { class: "num" }, i.load.toFixed(2)),
      el("td", { class: "num" }, rate(h.in_bytes_per_s)),
      el("td", { class: "num" }, rate(h.out_bytes_per_s)),
      el("td", { class: "num" }, i.replicas),
      checksCell(h),
      problems);
  });
  document.querySelector("#pops tbody").replaceChildren(...rows);
}

function renderMatrix(st) {
  const table = document.getElementById("matrix");
  const note = document.getElementById("matrix-note");
  const m = st.matrix;
  if (!m || m.paths.length === 0) {
    note.textContent = "Not measured yet: run `renkei netcheck` (an admin) to measure every path between file servers.";
    table.replaceChildren();
    return;
  }
  note.textContent = `Measured by ${m.requested_by}, ${ago(m.finished_ms, st.at_ms)} (${clock(m.started_ms)}\u2013${clock(m.finished_ms)}); ` +
    "rows send, columns receive; round trip is the smallest of the pings. `renkei netcheck` measures again.";
  const names = [];
  const site = {};
  for (const p of m.paths) {
    for (const s of [p.from, p.to]) {
      if (!names.includes(s.host)) { names.push(s.host); site[s.host] = s.site; }
    }
  }
  names.sort((a, b) => (site[a] + a).localeCompare(site[b] + b));
  const head = el("tr", {}, el("th", {}, "from \u2193 to \u2192"), ...names.map((n) => el("th", {}, `${n} (${site[n]})`)));
  const rows = names.map((from) => el("tr", {}, el("th", {}, `${from} (${site[from]})`), ...names.map((to) => {
    if (from === to) return el("td", { class: "self" }, "\u2014");
    const p = m.paths.find((q) => q.from.host === from && q.to.host === to);
    if (!p) return el("td", {}, "");
    const td = el("td", { "data-from": from, "data-to": to, "data-rtt-us": p.rtt_us, "data-rate": p.rate_bytes_per_s,
      class: p.error ? "error" : "", title: p.error || "" });
    if (p.rtt_us !== null) td.append(el("div", { class: "rtt" }, micros(p.rtt_us)));
    if (p.rate_bytes_per_s !== null) td.append(el("div", { class: "rate" }, rate(p.rate_bytes_per_s)));
    if (p.error) td.append(el("div", {}, "error"));
    return td;
  })));
  table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
}

function renderReplication(st) {
  const r = st.replication;
  const dl = document.getElementById("replication");
  if (!r) {
    dl.dataset.backlogFiles = "";
    dl.replaceChildren(el("dt", {}, "worker"), el("dd", {}, "no replication worker on this meta server"));
    return;
  }
  const items = [
    ["worker", r.enabled ? "running" : "off"],
    ["backlog", `${r.backlog_files} file(s), ${bytes(r.backlog_bytes)}`],
    ["copying now", r.in_flight],
    ["stuck (no source or no room)", r.stuck_files],
    ["surplus to trim", r.surplus_files],
    ["copies made", `${r.copies_done} (${bytes(r.bytes_copied)})`],
    ["copies failed", r.copies_failed],
    ["hosts lost", r.hosts_lost.length ? r.hosts_lost.join(", ") : "none"],
    ["last pass", r.last_pass_ms ? ago(r.last_pass_ms, st.at_ms) : "not yet"],
    ["last error", r.last_error || "none"],
  ];
  dl.dataset.backlogFiles = r.backlog_files;
  dl.replaceChildren(...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function renderVms(st) {
  const note = document.getElementById("vms-note");
  const table = document.getElementById("vms");
  const v = st.vms;
  if (!v) {
    note.textContent = "No VM report: the VM manager (`vpe serve`) has not reported to this meta server.";
    table.replaceChildren();
    return;
  }
  note.textContent = `Reported by ${v.reporter}, ${ago(v.at_ms, st.at_ms)}.`;
  const head = el("tr", {}, el("th", {}, "PoP"), el("th", {}, "site"), el("th", {}, "agent"), el("th", {}, "VMs"), el("th", {}, "which"));
  const rows = v.pops.map((p) => el("tr", { "data-pop": p.pop, "data-vms": p.vms.length },
    el("td", {}, p.pop), el("td", {}, p.site), el("td", {}, p.alive ? "connected" : "DOWN"),
    el("td", { class: "num" }, `${p.vms.length} / ${p.max_vms}`),
    el("td", {}, p.vms.map((x) => `${x.name} (${x.state}, ${x.owner})`).join(", "))));
  table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
}

function renderEvents(st) {
  const items = st.events.map((e) => el("li", { class: e.level, "data-level": e.level },
    el("time", { datetime: new Date(e.at_ms).toISOString() }, new Date(e.at_ms).toLocaleString()), e.message));
  if (items.length === 0) items.push(el("li", { class: "info" }, "nothing to report"));
  document.getElementById("events").replaceChildren(...items);
}

const SVG = "http://www.w3.org/2000/svg";

function chart(samples, series, w, h) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const frame = document.createElementNS(SVG, "rect");
  for (const [k, v] of [["x", 0], ["y", 0], ["width", w], ["height", h], ["fill", "#fbfbfb"], ["stroke", "#ddd"]]) frame.setAttribute(k, v);
  svg.append(frame);
  if (samples.length < 2) return svg;
  const t0 = samples[0].at_ms;
  const t1 = samples[samples.length - 1].at_ms;
  for (const s of series) {
    const max = Math.max(1, ...samples.map(s.value), s.max || 0);
    const pts = samples.map((p) => {
      const x = t1 > t0 ? ((p.at_ms - t0) / (t1 - t0)) * (w - 2) + 1 : 1;
      const y = h - 1 - (s.value(p) / max) * (h - 2);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", s.color);
    line.setAttribute("stroke-width", "1.5");
    svg.append(line);
  }
  return svg;
}

function renderTrends() {
  const hist = page.history;
  if (!hist) return;
  const range = document.getElementById("range").value;
  const css = getComputedStyle(document.documentElement);
  const color = (v) => css.getPropertyValue(v).trim() || "#333";
  const boxes = hist.map((h) => {
    const samples = range === "coarse" ? h.coarse : h.fine;
    const step = (range === "coarse" ? h.coarse_step_ms : h.fine_step_ms) / 1000;
    const span = samples.length > 1 ? (samples[samples.length - 1].at_ms - samples[0].at_ms) / 1000 : 0;
    const peak = Math.max(0, ...samples.map((p) => Math.max(p.in_bytes_per_s, p.out_bytes_per_s)));
    const last = samples[samples.length - 1];
    return el("div", { class: "trend", "data-host": h.host, "data-samples": samples.length },
      el("h3", {}, `${h.host} (${h.site})`),
      chart(samples, [
        { value: (p) => p.in_bytes_per_s, color: color("--in") },
        { value: (p) => p.out_bytes_per_s, color: color("--out") },
      ], 260, 60),
      el("div", { class: "note" }, `throughput, peak ${rate(peak)}`),
      chart(samples, [{ value: (p) => p.free, max: last ? last.capacity : 0, color: color("--free") }], 260, 40),
      el("div", { class: "note" }, `free space${last ? ", now " + bytes(last.free) : ""}; ` +
        `${samples.length} samples every ${step} s over ${(span / 60).toFixed(1)} min`));
  });
  document.getElementById("trends").replaceChildren(...boxes);
}

function markFreshness() {
  const f = document.getElementById("freshness");
  const age = Date.now() - page.lastOk;
  if (page.lastOk && age < Math.max(3000, 3 * page.refreshMs)) {
    f.dataset.state = "live";
    f.textContent = "updated " + clock(page.lastOk);
  } else if (page.lastOk) {
    f.dataset.state = "stale";
    f.textContent = `no answer from the meta server for ${(age / 1000).toFixed(0)} s`;
  }
}

async function refreshStatus() {
  try {
    const r = await fetch("/api/status", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const st = await r.json();
    page.status = st;
    page.refreshMs = st.refresh_ms || 1000;
    renderSummary(st);
    renderPops(st);
    renderMatrix(st);
    renderReplication(st);
    renderVms(st);
    renderEvents(st);
    page.lastOk = Date.now();
    page.updates += 1;
    document.body.dataset.updates = page.updates;
  } catch (e) {
    console.warn("status refresh failed", e);
  } finally {
    markFreshness();
    setTimeout(refreshStatus, page.refreshMs);
  }
}

async function refreshHistory() {
  try {
    const r = await fetch("/api/history", { cache: "no-store" });
    if (r.ok) {
      page.history = await r.json();
      renderTrends();
    }
  } catch (e) {
    console.warn("history refresh failed", e);
  } finally {
    setTimeout(refreshHistory, Math.max(5000, page.refreshMs));
  }
}

document.getElementById("range").addEventListener("change", renderTrends);
refreshStatus();
refreshHistory();
