// The pbtkit dashboard: reads JSON from this server and draws it with inline SVG.
// Names and values that users choose (experiments, hyperparameters, metrics) are only
// ever inserted with textContent or as attribute values of numbers, never as HTML.
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const REFRESH_MS = 2000;
  const COLORS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
  ];
  const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const params = new URLSearchParams(window.location.search);
  const state = {
    experiment: params.get("experiment"),
    metric: params.get("metric"),
    refreshes: 0,
    timer: null,
    calls: 0,
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function memberColor(member, count) {
    if (count <= COLORS.length) return COLORS[member % COLORS.length];
    return `hsl(${Math.round((member * 360) / Math.max(count, 1))}, 65%, 45%)`;
  }

  function scoreColor(t) {
    if (t === null || !Number.isFinite(t)) return "#bbbbbb";
    const x = Math.min(Math.max(t, 0), 1) * (VIRIDIS.length - 1);
    const i = Math.min(Math.floor(x), VIRIDIS.length - 2);
    const f = x - i;
    const rgb = VIRIDIS[i].map((c, k) => Math.round(c + f * (VIRIDIS[i + 1][k] - c)));
    return `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
  }

  function fmt(value) {
    if (value === null || value === undefined) return "–";
    if (typeof value === "number") {
      if (Number.isInteger(value)) return String(value);
      if (Math.abs(value) >= 1e5 || Math.abs(value) < 1e-3) return value.toExponential(3);
      return String(Number(value.toPrecision(4)));
    }
    return String(value);
  }

  async function getJSON(path) {
    const response = await fetch(path, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const message = body && typeof body.message === "string" ? body.message : `${response.status} ${response.statusText}`;
      throw new Error(message);
    }
    return body;
  }

  // scales and axes ------------------------------------------------------------------
  function extent(values) {
    const finite = values.filter((v) => v !== null && Number.isFinite(v));
    if (!finite.length) return [0, 1];
    let lo = Math.min(...finite);
    let hi = Math.max(...finite);
    if (lo === hi) {
      const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
      lo -= pad;
      hi += pad;
    }
    return [lo, hi];
  }

  function ticks(lo, hi, count) {
    const span = hi - lo;
    const step0 = span / Math.max(count, 1);
    const mag = Math.pow(10, Math.floor(Math.log10(step0)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => span / s <= count) || 10 * mag;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    return out;
  }

  function frame(container, opts) {
    const width = opts.width || 900;
    const height = opts.height || 320;
    const margin = { left: opts.left || 64, right: 16, top: 12, bottom: 40 };
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
    if (opts.label) root.appendChild(svg("title", {}, opts.label));
    const [x0, x1] = opts.x;
    const [y0, y1] = opts.y;
    const log = Boolean(opts.log) && y0 > 0;
    const ly = (v) => (log ? Math.log10(v) : v);
    const sx = (v) => margin.left + ((v - x0) / (x1 - x0 || 1)) * (width - margin.left - margin.right);
    const sy = (v) => {
      const t = (ly(v) - ly(y0)) / (ly(y1) - ly(y0) || 1);
      return height - margin.bottom - t * (height - margin.top - margin.bottom);
    };
    const axis = svg("g", { class: "axis" });
    axis.appendChild(svg("line", { x1: margin.left, x2: width - margin.right, y1: height - margin.bottom, y2: height - margin.bottom }));
    axis.appendChild(svg("line", { x1: margin.left, x2: margin.left, y1: margin.top, y2: height - margin.bottom }));
    for (const t of ticks(x0, x1, 8)) {
      axis.appendChild(svg("line", { x1: sx(t), x2: sx(t), y1: height - margin.bottom, y2: height - margin.bottom + 4 }));
      axis.appendChild(svg("text", { x: sx(t), y: height - margin.bottom + 16, "text-anchor": "middle" }, fmt(t)));
    }
    let yTicks;
    if (opts.categories) {
      yTicks = opts.categories.map((c, i) => [i, c]);
    } else if (log) {
      yTicks = [];
      for (let e = Math.floor(Math.log10(y0)); e <= Math.ceil(Math.log10(y1)); e += 1) {
        const v = Math.pow(10, e);
        if (v >= y0 && v <= y1) yTicks.push([v, v.toExponential(0)]);
      }
      if (yTicks.length < 2) yTicks = [[y0, fmt(y0)], [y1, fmt(y1)]];
    } else {
      yTicks = ticks(y0, y1, 5).map((t) => [t, fmt(t)]);
    }
    for (const [v, text] of yTicks) {
      axis.appendChild(svg("line", { class: "grid", x1: margin.left, x2: width - margin.right, y1: sy(v), y2: sy(v), stroke: "#eeeeee" }));
      axis.appendChild(svg("text", { x: margin.left - 6, y: sy(v) + 4, "text-anchor": "end" }, text));
    }
    axis.appendChild(svg("text", { class: "label", x: (margin.left + width - margin.right) / 2, y: height - 6, "text-anchor": "middle" }, opts.xLabel || "step"));
    axis.appendChild(svg("text", { class: "label", x: 12, y: margin.top + 8 }, opts.yLabel || ""));
    root.appendChild(axis);
    container.appendChild(root);
    return { root, sx, sy };
  }

  function polyline(points, attrs) {
    return svg("polyline", { points: points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "), fill: "none", ...attrs });
  }

  function triangle(x, y, color) {
    return svg("path", { d: `M${(x - 5).toFixed(1)},${(y - 7).toFixed(1)} h10 l-5,8 z`, fill: color, stroke: "#000", "stroke-width": 0.7, class: "exploit" });
  }

  function legend(container, members, count, best) {
    const box = el("div", null, "legend");
    for (const m of members) {
      const item = el("span");
      const swatch = el("span", null, "swatch");
      swatch.style.background = memberColor(m, count);
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(`member ${m}${m === best ? " (best)" : ""}`));
      box.appendChild(item);
    }
    const mark = el("span", "▼ exploit");
    box.appendChild(mark);
    container.appendChild(box);
  }

  // the parts of the page ------------------------------------------------------------
  function renderExperiments(experiments) {
    const nav = $("experiments");
    nav.replaceChildren();
    for (const e of experiments) {
      const link = el("a", e.name, e.name === state.experiment ? "current" : "");
      link.href = `?${new URLSearchParams({ experiment: e.name })}`;
      link.title = `${e.status}, population ${fmt(e.population)}, ${fmt(e.metric)} (${fmt(e.mode)})`;
      nav.appendChild(link);
    }
  }

  function renderStatus(view) {
    $("title").textContent = view.name;
    document.title = `pbtkit: ${view.name}`;
    const best = view.members.find((m) => m.member === view.best_member);
    const parts = [
      view.status,
      `${view.steps_done}/${view.population * view.total_steps} steps`,
      `${view.jumps.length} exploits`,
      best ? `best: member ${best.member}, ${view.metric} = ${fmt(best.score)}` : "no trial finished yet",
    ];
    $("status").textContent = parts.join(" · ");
    document.body.dataset.status = view.status;
  }

  function renderMembers(view) {
    const table = $("members");
    const head = el("tr");
    for (const [text, cls] of [["member", "text"], ["status", "text"], ["step", ""], [view.metric, ""]]) head.appendChild(el("th", text, cls));
    for (const name of view.hparams) head.appendChild(el("th", name));
    head.appendChild(el("th", "now", "text"));
    table.tHead.replaceChildren(head);
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const m of view.members) {
      const row = el("tr", null, m.member === view.best_member ? "best" : "");
      row.dataset.member = String(m.member);
      const first = el("td", null, "text");
      const swatch = el("span", null, "swatch");
      swatch.style.background = memberColor(m.member, view.population);
      first.appendChild(swatch);
      first.appendChild(document.createTextNode(String(m.member)));
      row.appendChild(first);
      row.appendChild(el("td", m.status, `text status-${m.status}`));
      row.appendChild(el("td", fmt(m.step)));
      row.appendChild(el("td", fmt(m.score), "score"));
      for (const name of view.hparams) {
        // A conditional hyperparameter the member does not have is inactive: an empty cell.
        if (name in m.hparams) row.appendChild(el("td", fmt(m.hparams[name])));
        else {
          const cell = el("td", "", "inactive");
          cell.title = `${name} is inactive for this member`;
          row.appendChild(cell);
        }
      }
      row.appendChild(el("td", m.training ? `training ${m.training[0]}–${m.training[1]}` : "", "text"));
      body.appendChild(row);
    }
  }

  function renderMetricPicker(view) {
    const select = $("metric");
    const wanted = view.shown_metric;
    if (select.dataset.options !== JSON.stringify(view.metrics)) {
      select.replaceChildren();
      for (const name of view.metrics) {
        const option = el("option", name);
        option.value = name;
        select.appendChild(option);
      }
      select.dataset.options = JSON.stringify(view.metrics);
    }
    select.value = wanted;
  }

  function renderCurves(view) {
    const box = $("curves");
    box.replaceChildren();
    const members = Object.keys(view.curves).map(Number).sort((a, b) => a - b);
    if (!members.length) {
      box.appendChild(el("p", "no reports yet", "label"));
      return;
    }
    const all = members.flatMap((m) => view.curves[m]);
    const x = [0, Math.max(view.total_steps, ...all.map((p) => p[0]))];
    const y = extent(all.map((p) => p[1]));
    const { root, sx, sy } = frame(box, { x, y, yLabel: view.shown_metric, label: `${view.shown_metric} per member` });
    for (const m of members) {
      const color = memberColor(m, view.population);
      const jumps = new Set(view.jumps.filter((j) => j.member === m).map((j) => j.step));
      const best = m === view.best_member;
      let segment = [];
      let previous = null;
      const flush = () => {
        if (segment.length) root.appendChild(polyline(segment, { stroke: color, "stroke-width": best ? 2.6 : 1.3, class: "curve" }));
      };
      for (const [step, value] of view.curves[m]) {
        if (value === null) continue;
        const point = [sx(step), sy(value)];
        const jumped = previous !== null && [...jumps].some((j) => j > previous[0] && j <= step);
        if (jumped) {
          flush();
          root.appendChild(polyline([previous[1], point], { stroke: color, "stroke-dasharray": "2 3" }));
          root.appendChild(triangle(point[0], point[1], color));
          segment = [];
        }
        segment.push(point);
        previous = [step, point];
      }
      flush();
    }
    legend(box, members, view.population, view.best_member);
  }

  function renderSchedules(view) {
    const box = $("schedules");
    box.replaceChildren();
    const members = Object.keys(view.schedules).map(Number).sort((a, b) => a - b);
    if (!members.length) return;
    const x = [0, Math.max(view.total_steps, ...members.flatMap((m) => view.schedules[m].map((s) => s[1])))];
    for (const name of view.hparams) {
      const domain = view.space[name] || {};
      // Absent where inactive (conditional hyperparameters): left out, and the line breaks.
      const values = members.flatMap((m) => view.schedules[m].map((s) => s[2][name])).filter((v) => v !== undefined);
      const numeric = values.every((v) => typeof v === "number" || v === null);
      const categories = numeric ? null : (Array.isArray(domain.values) ? domain.values : [...new Set(values)]);
      const toY = (v) => (categories ? categories.findIndex((c) => JSON.stringify(c) === JSON.stringify(v)) : v);
      const y = categories ? [-0.5, categories.length - 0.5] : extent(values);
      const cell = el("div");
      const { root, sx, sy } = frame(cell, {
        x, y, width: 440, height: 220, left: 70, yLabel: name,
        log: domain.type === "loguniform", categories: categories ? categories.map(String) : null,
        label: `schedule of ${name}`,
      });
      for (const m of members) {
        const color = memberColor(m, view.population);
        let points = [];
        const flush = () => {
          if (points.length) root.appendChild(polyline(points, { stroke: color, "stroke-width": m === view.best_member ? 2.6 : 1.2, class: "schedule" }));
          points = [];
        };
        for (const [start, end, hp] of view.schedules[m]) {
          if (!(name in hp)) {
            flush(); // inactive here: a gap, not a line across it
            continue;
          }
          const v = toY(hp[name]);
          if (v === null || v === undefined || (categories && v < 0)) continue;
          points.push([sx(start), sy(v)], [sx(end), sy(v)]);
        }
        flush();
      }
      box.appendChild(cell);
    }
  }

  function renderTree(view) {
    const box = $("tree");
    box.replaceChildren();
    const nodes = view.tree.filter((n) => n.status !== "failed");
    if (!nodes.length) {
      box.appendChild(el("p", "no trials yet", "label"));
      return;
    }
    const byId = new Map(nodes.map((n) => [n.id, n]));
    const x = [0, Math.max(view.total_steps, ...nodes.map((n) => n.end))];
    const rows = Math.max(view.population, ...nodes.map((n) => n.member + 1));
    const height = Math.max(160, 40 + 26 * rows);
    const { root, sx } = frame(box, {
      x, y: [0, 1], height, yLabel: "member", label: "family tree",
      categories: [],
    });
    const top = 20;
    const rowY = (m) => top + ((m + 0.5) * (height - 40 - top)) / rows;
    for (let m = 0; m < rows; m += 1) {
      root.appendChild(svg("text", { class: "label", x: 56, y: rowY(m) + 4, "text-anchor": "end" }, String(m)));
    }
    const scores = extent(nodes.map((n) => n.score));
    const norm = (s) => (s === null ? null : (view.mode === "min" ? scores[1] - s : s - scores[0]) / (scores[1] - scores[0] || 1));
    const edges = svg("g", { class: "edges" });
    const dots = svg("g", { class: "nodes" });
    for (const n of nodes) {
      const parent = n.parent !== null ? byId.get(n.parent) : undefined;
      const [fx, fy] = parent ? [sx(parent.end), rowY(parent.member)] : [sx(n.start), rowY(n.member)];
      const exploit = parent !== undefined && parent.member !== n.member;
      const stroke = n.best ? "#d62728" : exploit ? "#ff7f0e" : "#9e9e9e";
      edges.appendChild(svg("line", {
        x1: fx.toFixed(1), y1: fy.toFixed(1), x2: sx(n.end).toFixed(1), y2: rowY(n.member).toFixed(1),
        stroke, "stroke-width": n.best ? 3 : exploit ? 1.4 : 1, class: exploit ? "edge exploit" : "edge",
      }));
      const done = n.status === "done";
      const dot = svg("circle", {
        cx: sx(n.end).toFixed(1), cy: rowY(n.member).toFixed(1), r: 5,
        fill: done ? scoreColor(norm(n.score)) : "#ffffff",
        stroke: n.best ? "#d62728" : "#000000", "stroke-width": n.best ? 2 : 0.6,
        class: `node ${n.status}`,
      });
      dot.dataset.trial = String(n.id);
      dot.appendChild(svg("title", {}, `trial ${n.id}: member ${n.member}, steps ${n.start}–${n.end}, ${n.status}, ${view.metric} ${fmt(n.score)}`
        + (exploit ? `, copied member ${parent.member}` : "")));
      dots.appendChild(dot);
    }
    root.appendChild(edges);
    root.appendChild(dots);
    const key = el("div", null, "legend");
    for (const [text, color] of [["continue", "#9e9e9e"], ["exploit (copied a member)", "#ff7f0e"], ["lineage of the best member", "#d62728"]]) {
      const item = el("span");
      const swatch = el("span", null, "swatch");
      swatch.style.background = color;
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(text));
      key.appendChild(item);
    }
    key.appendChild(el("span", `node colour: ${view.metric}; hollow: training`));
    box.appendChild(key);
  }

  function show(id, visible) {
    $(id).hidden = !visible;
  }

  function showError(message) {
    const box = $("error");
    box.hidden = !message;
    box.textContent = message || "";
  }

  function render(view) {
    renderStatus(view);
    renderMembers(view);
    renderMetricPicker(view);
    renderCurves(view);
    renderSchedules(view);
    renderTree(view);
    for (const id of ["population-section", "curves-section", "schedules-section", "tree-section"]) show(id, true);
  }

  async function refresh() {
    window.clearTimeout(state.timer);
    state.calls += 1;
    const call = state.calls;
    let finished = false;
    try {
      const experiments = await getJSON("dashboard/api/experiments");
      if (!state.experiment && experiments.length) state.experiment = experiments[experiments.length - 1].name;
      renderExperiments(experiments);
      if (state.experiment) {
        const query = new URLSearchParams({ name: state.experiment });
        if (state.metric) query.set("metric", state.metric);
        const view = await getJSON(`dashboard/api/experiment?${query}`);
        render(view);
        finished = view.status === "finished";
      } else {
        $("status").textContent = "no experiments in this store yet";
      }
      showError(null);
    } catch (error) {
      showError(error instanceof Error ? error.message : String(error));
    }
    if (call !== state.calls) return; // a newer refresh (another metric) took over
    state.refreshes += 1;
    document.body.dataset.refreshes = String(state.refreshes);
    $("footer").textContent = finished
      ? "the run has finished"
      : `refreshing every ${REFRESH_MS / 1000} s (last ${new Date().toLocaleTimeString()})`;
    if (!finished) state.timer = window.setTimeout(refresh, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("metric").addEventListener("change", (event) => {
      state.metric = event.target.value;
      const url = new URL(window.location.href);
      url.searchParams.set("metric", state.metric);
      window.history.replaceState(null, "", url);
      refresh();
    });
    refresh();
  });
})();
