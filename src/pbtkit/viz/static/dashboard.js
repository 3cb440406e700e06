// The pbtkit dashboard: reads JSON from this server and draws it, charts with uPlot
// (shipped in this package beside this file, MIT licence in uPlot.LICENSE), the family
// tree with inline SVG. Names and values that users choose (experiments,
// hyperparameters, metrics, categorical values) are only ever inserted with textContent,
// as SVG text nodes, or drawn on a canvas; never as HTML.
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const REFRESH_MS = 2000;
  const COLORS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
  ];
  // Viridis from its dark end to 85%: every colour stays distinct from the white page,
  // and from the one beside it, where full viridis ends in a pale yellow.
  const SCALE = [
    [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [110, 206, 88], [181, 222, 43],
  ];
  const MAX_TOOLTIP_LINES = 12;
  // steps are whole numbers: their axes tick at whole numbers only
  const STEP_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 2.5e3, 5e3,
    1e4, 2e4, 2.5e4, 5e4, 1e5, 2e5, 2.5e5, 5e5, 1e6, 2e6, 5e6, 1e7, 2e7, 5e7, 1e8];
  const params = new URLSearchParams(window.location.search);
  const state = {
    experiment: params.get("experiment"),
    metric: params.get("metric"),
    sort: { key: null, dir: 1 },
    filter: "",
    charts: new Map(),
    view: null,
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

  // scores as colours: by rank, so one outlier cannot squash the others into one colour
  function rankOf(values, mode) {
    const finite = [...new Set(values.filter((v) => v !== null && Number.isFinite(v)))];
    finite.sort((a, b) => (mode === "min" ? b - a : a - b)); // worst first
    const at = new Map(finite.map((v, i) => [v, finite.length > 1 ? i / (finite.length - 1) : 1]));
    return (v) => (v === null || v === undefined || !at.has(v) ? null : at.get(v));
  }

  function scaleRGB(t) {
    const x = Math.min(Math.max(t, 0), 1) * (SCALE.length - 1);
    const i = Math.min(Math.floor(x), SCALE.length - 2);
    const f = x - i;
    return SCALE[i].map((c, k) => Math.round(c + f * (SCALE[i + 1][k] - c)));
  }

  function scoreColor(t) {
    if (t === null || !Number.isFinite(t)) return "#bbbbbb";
    const rgb = scaleRGB(t);
    return `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
  }

  function textOn(t) {
    const [r, g, b] = scaleRGB(t);
    return 0.299 * r + 0.587 * g + 0.114 * b > 150 ? "#000000" : "#ffffff";
  }

  // a tick of a log axis: enough digits to tell 4e-4 from 5e-4
  function logTick(v) {
    if (v === null || v === undefined) return null;
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1).replace(/\.0e/, "e");
    return String(Number(v.toPrecision(3)));
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

  function swatchLine(text, color) {
    const line = el("div");
    if (color) {
      const swatch = el("span", null, "swatch");
      swatch.style.background = color;
      line.appendChild(swatch);
    }
    line.appendChild(document.createTextNode(text));
    return line;
  }

  // charts ----------------------------------------------------------------------------
  // A readout that follows the cursor: its lines come from `lines(u, idx)` as
  // [text, colour] pairs, inserted as text.
  function tooltip(lines) {
    let box = null;
    return {
      hooks: {
        init: [(u) => {
          box = el("div", null, "u-tooltip");
          box.hidden = true;
          u.over.appendChild(box);
        }],
        setCursor: [(u) => {
          const idx = u.cursor.idx;
          const shown = idx === null || idx === undefined || u.cursor.left < 0 ? [] : lines(u, idx);
          if (!shown.length) {
            box.hidden = true;
            return;
          }
          box.replaceChildren(...shown.map(([text, color], i) => {
            const line = swatchLine(text, color);
            if (i === 0) line.className = "head";
            return line;
          }));
          box.hidden = false;
          const width = u.over.clientWidth;
          const left = u.cursor.left + 14;
          box.style.left = `${left + box.offsetWidth > width ? Math.max(0, u.cursor.left - box.offsetWidth - 14) : left}px`;
          box.style.top = `${Math.max(0, u.cursor.top - 12)}px`;
        }],
      },
    };
  }

  // One line per series with a value at idx, the best first, at most MAX_TOOLTIP_LINES.
  function seriesLines(head, mode, value) {
    return (u, idx) => {
      const rows = [];
      for (let s = 1; s < u.series.length; s += 1) {
        const v = u.data[s][idx];
        if (v === null || v === undefined || !u.series[s].show) continue;
        rows.push([v, `${u.series[s].label}: ${value ? value(v, s, idx) : fmt(v)}`, u.series[s].stroke()]);
      }
      if (!rows.length) return [];
      rows.sort((a, b) => (mode === "min" ? a[0] - b[0] : b[0] - a[0]));
      const out = [[head(u.data[0][idx], idx), null], ...rows.slice(0, MAX_TOOLTIP_LINES).map((r) => [r[1], r[2]])];
      if (rows.length > MAX_TOOLTIP_LINES) out.push([`… ${rows.length - MAX_TOOLTIP_LINES} more`, null]);
      return out;
    };
  }

  function categoricalAxis(categories) {
    return {
      splits: () => categories.map((_, i) => i),
      values: (u, splits) => splits.map((i) => (Number.isInteger(i) && i >= 0 && i < categories.length ? String(categories[i]) : "")),
    };
  }

  // Draw (or update) one uPlot chart in `box`. Charts are kept between refreshes and
  // given new data, so a zoom and a hover survive the page's refresh. `steps`: the x axis
  // spans 0..steps (the whole run) while the user has not zoomed in.
  function plot(id, box, make, data, key, steps) {
    const width = Math.max(320, Math.floor(box.clientWidth || box.parentElement.clientWidth || 900));
    const whole = (entry) => {
      if (steps === undefined || entry.zoomed || !data[0].length) return;
      entry.u.setScale("x", { min: Math.min(0, data[0][0]), max: Math.max(steps, data[0][data[0].length - 1]) });
    };
    let entry = state.charts.get(id);
    if (entry && entry.key === key && entry.u.root.isConnected && entry.u.root.parentElement === box) {
      entry.u.setData(data, !entry.zoomed);
      whole(entry);
      return entry.u;
    }
    if (entry) entry.u.destroy();
    box.replaceChildren();
    const opts = make(width);
    const created = { u: null, key, zoomed: false };
    opts.hooks = opts.hooks || {};
    opts.hooks.setSelect = [...(opts.hooks.setSelect || []), (u) => {
      if (u.select.width > 0) created.zoomed = true;
    }];
    created.u = new uPlot(opts, data, box);
    // after uPlot's own double-click (which zooms out to the data), out to the whole run
    created.u.over.addEventListener("dblclick", () => {
      created.zoomed = false;
      whole(created);
    });
    whole(created);
    box.__uplot = created.u; // for the browser tests, which read the drawn ticks
    state.charts.set(id, created);
    return created.u;
  }

  function forget(prefix) {
    for (const [id, entry] of [...state.charts]) {
      if (id.startsWith(prefix) && !entry.u.root.isConnected) {
        entry.u.destroy();
        state.charts.delete(id);
      }
    }
  }

  function baseOptions(width, height, xLabel, yLabel, plugins) {
    return {
      width,
      height,
      plugins,
      cursor: { drag: { x: true, y: false, setScale: true }, focus: { prox: 24 } },
      focus: { alpha: 0.35 },
      legend: { live: false },
      scales: { x: { time: false } },
      axes: [
        { label: xLabel, stroke: "#656d76", grid: { stroke: "#eeeeee" }, ...(xLabel.startsWith("step") ? { incrs: STEP_INCRS } : {}) },
        { label: yLabel, stroke: "#656d76", grid: { stroke: "#eeeeee" }, size: 64, space: 24 },
      ],
      series: [{ label: xLabel }],
    };
  }

  // Values of (member -> [[step, value], ...]) aligned on one x array for uPlot.
  function align(byMember, members) {
    const xs = [...new Set(members.flatMap((m) => byMember[m].map((p) => p[0])))].sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    const data = [xs];
    for (const m of members) {
      const ys = new Array(xs.length).fill(null);
      for (const [x, y] of byMember[m]) ys[index.get(x)] = y;
      data.push(ys);
    }
    return data;
  }

  // Stretches (start, end, value) of several series, as stepped lines on one x array.
  function stepped(stretchesBySeries) {
    const xs = [...new Set(stretchesBySeries.flatMap((list) => list.flatMap((s) => [s[0], s[1]])))].sort((a, b) => a - b);
    const data = [xs];
    for (const list of stretchesBySeries) {
      const ys = xs.map((x) => {
        let found = null;
        for (const [a, b, v] of list) {
          if (x >= a && x < b) found = v;
          else if (x === b && found === null) found = v;
        }
        return found;
      });
      data.push(ys);
    }
    return data;
  }

  function domainOf(view, name) {
    return view.space[name] || {};
  }

  function categoriesOf(view, name, values) {
    const numeric = values.every((v) => typeof v === "number" || v === null || v === undefined);
    if (numeric) return null;
    const domain = domainOf(view, name);
    return Array.isArray(domain.values) ? domain.values : [...new Set(values.filter((v) => v !== undefined))];
  }

  function toAxis(categories, value) {
    if (value === undefined || value === null) return null;
    if (!categories) return typeof value === "number" ? value : null;
    const i = categories.findIndex((c) => JSON.stringify(c) === JSON.stringify(value));
    return i < 0 ? null : i;
  }

  function hparamAxis(view, name, categories, opts, which) {
    const axis = opts.axes[which];
    const scale = which === 0 ? "x" : "y";
    if (categories) {
      Object.assign(axis, categoricalAxis(categories.map(String)));
      opts.scales[scale] = { ...(opts.scales[scale] || {}), time: false, range: [-0.5, categories.length - 0.5] };
    } else if (domainOf(view, name).type === "loguniform") {
      opts.scales[scale] = { ...(opts.scales[scale] || {}), time: false, distr: 3, log: 10 };
      axis.values = (u, splits) => splits.map(logTick);
    }
  }

  function caption(box, text) {
    box.appendChild(el("div", text, "chart-title"));
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

  function memberColumns(view) {
    const columns = [
      { key: "member", label: "member", text: true, get: (m) => m.member },
      { key: "status", label: "status", text: true, get: (m) => m.status },
      { key: "step", label: "step", get: (m) => m.step },
      { key: "score", label: view.metric, get: (m) => m.score },
    ];
    for (const name of view.hparams) columns.push({ key: `hp:${name}`, label: name, get: (m) => m.hparams[name] });
    columns.push({ key: "now", label: "now", text: true, get: (m) => (m.training ? `training ${m.training[0]}–${m.training[1]}` : "") });
    return columns;
  }

  function compare(a, b) {
    const missing = (v) => v === null || v === undefined || v === "";
    if (missing(a) || missing(b)) return missing(a) - missing(b); // missing last
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b), undefined, { numeric: true });
  }

  // "lr<0.01 status=done relu": a term with an operator compares one column, any
  // other term must appear somewhere in the row.
  function matcher(text, columns) {
    const terms = text.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const tests = terms.map((term) => {
      const found = /^(.+?)(<=|>=|!=|=|<|>)(.*)$/.exec(term);
      const column = found && columns.find((c) => c.label.toLowerCase() === found[1]);
      if (!column) return (m, cells) => cells.some((c) => c.includes(term));
      const [, , op, raw] = found;
      const number = Number(raw);
      return (m) => {
        const v = column.get(m);
        if (v === null || v === undefined) return op === "!=";
        const x = typeof v === "number" && raw !== "" && !Number.isNaN(number) ? number : raw;
        const y = typeof v === "number" ? v : String(v).toLowerCase();
        switch (op) {
          case "<": return y < x;
          case ">": return y > x;
          case "<=": return y <= x;
          case ">=": return y >= x;
          case "!=": return y !== x;
          default: return y === x;
        }
      };
    });
    return (m) => {
      const cells = columns.map((c) => fmt(c.get(m)).toLowerCase());
      return tests.every((t) => t(m, cells));
    };
  }

  function renderMembers(view) {
    const table = $("members");
    const columns = memberColumns(view);
    const head = el("tr");
    for (const column of columns) {
      const th = el("th", null, column.text ? "text" : "");
      const button = el("button", column.label, "sort");
      button.type = "button";
      button.dataset.key = column.key;
      button.title = `sort by ${column.label}`;
      th.appendChild(button);
      if (state.sort.key === column.key) th.setAttribute("aria-sort", state.sort.dir > 0 ? "ascending" : "descending");
      head.appendChild(th);
    }
    table.tHead.replaceChildren(head);
    const rank = rankOf(view.members.map((m) => m.score), view.mode);
    const keep = matcher(state.filter, columns);
    let rows = view.members.filter(keep);
    const sortBy = columns.find((c) => c.key === state.sort.key);
    if (sortBy) rows = [...rows].sort((a, b) => compare(sortBy.get(a), sortBy.get(b)) * state.sort.dir || a.member - b.member);
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const m of rows) {
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
      const score = el("td", fmt(m.score), "score");
      const t = rank(m.score);
      if (t !== null) {
        score.style.background = scoreColor(t);
        score.style.color = textOn(t);
      }
      row.appendChild(score);
      for (const name of view.hparams) {
        const value = m.hparams[name];
        // a conditional hyperparameter the member does not have is inactive
        const cell = el("td", value === undefined ? "" : fmt(value), value === undefined ? "inactive" : "");
        if (value === undefined) cell.title = `${name} is inactive for this member`;
        row.appendChild(cell);
      }
      row.appendChild(el("td", columns[columns.length - 1].get(m), "text"));
      body.appendChild(row);
    }
    $("members-count").textContent = rows.length === view.members.length
      ? `${rows.length} members`
      : `showing ${rows.length} of ${view.members.length} members`;
    const key = $("score-key");
    key.replaceChildren(el("span", `${view.metric} colour, by rank:`), el("span", "worst", "ramp-end"));
    const ramp = el("span", null, "ramp");
    for (let i = 0; i <= 8; i += 1) {
      const stop = el("span");
      stop.style.background = scoreColor(i / 8);
      ramp.appendChild(stop);
    }
    key.appendChild(ramp);
    key.appendChild(el("span", "best", "ramp-end"));
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
    const members = Object.keys(view.curves).map(Number).sort((a, b) => a - b);
    $("curves-title").textContent = `${view.shown_metric} per member, by step (drag to zoom, double-click to reset)`;
    if (!members.length) {
      state.charts.get("curves")?.u.destroy();
      state.charts.delete("curves");
      box.replaceChildren(el("p", "no reports yet", "label"));
      return;
    }
    const data = align(view.curves, members);
    const jumps = view.jumps;
    const exploitMarks = {
      hooks: {
        draw: [(u) => {
          const ctx = u.ctx;
          ctx.save();
          for (const j of jumps) {
            const s = members.indexOf(j.member) + 1;
            if (s < 1 || !u.series[s].show) continue;
            // the member's first value at or after the step it exploited
            const i = u.data[0].findIndex((x, k) => x >= j.step && u.data[s][k] !== null);
            if (i < 0) continue;
            const x = u.valToPos(u.data[0][i], "x", true);
            const y = u.valToPos(u.data[s][i], "y", true);
            const r = 5 * devicePixelRatio;
            ctx.beginPath();
            ctx.moveTo(x - r, y - 1.4 * r);
            ctx.lineTo(x + r, y - 1.4 * r);
            ctx.lineTo(x, y + 0.2 * r);
            ctx.closePath();
            ctx.fillStyle = u.series[s].stroke();
            ctx.strokeStyle = "#000000";
            ctx.lineWidth = devicePixelRatio;
            ctx.fill();
            ctx.stroke();
          }
          ctx.restore();
        }],
      },
    };
    const lines = seriesLines((x) => `step ${fmt(x)}`, view.mode, (v, s, idx) => {
      const m = members[s - 1];
      const copied = jumps.find((j) => j.member === m && j.step === data[0][idx]);
      return fmt(v) + (copied ? ` (copied member ${copied.donor_member})` : "");
    });
    plot("curves", box, (width) => {
      const opts = baseOptions(width, 340, "step", view.shown_metric, [tooltip(lines), exploitMarks]);
      for (const m of members) {
        const best = m === view.best_member;
        opts.series.push({
          label: `member ${m}${best ? " (best)" : ""}`,
          stroke: memberColor(m, view.population),
          width: best ? 2.6 : 1.3,
          points: { show: false },
          spanGaps: false,
        });
      }
      return opts;
    }, data, `${view.shown_metric}|${members.join(",")}|${view.best_member}`, view.total_steps);
  }

  function renderBestSoFar(view) {
    const box = $("best-so-far");
    const points = view.best_so_far;
    if (!points.length) {
      box.replaceChildren(el("p", "no trial finished yet", "label"));
      state.charts.delete("best");
      return;
    }
    const data = [points.map((p) => p[0]), points.map((p) => p[1])];
    const lines = (u, idx) => [[`step ${fmt(u.data[0][idx])}`, null], [`best ${view.metric} so far: ${fmt(u.data[1][idx])}`, "#d62728"]];
    plot("best", box, (width) => {
      const opts = baseOptions(width, 220, "step", `best ${view.metric}`, [tooltip(lines)]);
      opts.legend = { show: false };
      opts.series.push({
        label: "best so far",
        stroke: "#d62728",
        width: 2,
        paths: uPlot.paths.stepped({ align: 1 }),
        points: { show: true, size: 5 },
      });
      return opts;
    }, data, "best", view.total_steps);
  }

  function renderSchedules(view) {
    const box = $("schedules");
    const members = Object.keys(view.schedules).map(Number).sort((a, b) => a - b);
    if (!members.length) {
      box.replaceChildren();
      forget("schedule:");
      return;
    }
    const seen = new Set();
    for (const name of view.hparams) {
      const id = `schedule:${name}`;
      seen.add(id);
      const values = members.flatMap((m) => view.schedules[m].map((s) => s[2][name]));
      const categories = categoriesOf(view, name, values);
      const series = members.map((m) => view.schedules[m].map(([a, b, hp]) => [a, b, toAxis(categories, hp[name])]));
      const data = stepped(series);
      let cell = box.querySelector(`[data-chart="${CSS.escape(id)}"]`);
      if (!cell) {
        cell = el("div", null, "cell");
        cell.dataset.chart = id;
        caption(cell, `schedule of ${name}`);
        cell.appendChild(el("div", null, "plot"));
        box.appendChild(cell);
      }
      const shown = (v) => (categories ? String(categories[v]) : fmt(v));
      const lines = seriesLines((x) => `step ${fmt(x)}: ${name}`, "max", (v) => shown(v));
      plot(id, cell.lastChild, (width) => {
        const opts = baseOptions(width, 220, "step", name, [tooltip(lines)]);
        opts.legend = { show: false };
        hparamAxis(view, name, categories, opts, 1);
        for (const m of members) {
          opts.series.push({
            label: `member ${m}`,
            stroke: memberColor(m, view.population),
            width: m === view.best_member ? 2.6 : 1.2,
            paths: uPlot.paths.stepped({ align: 1 }),
            points: { show: false },
            spanGaps: false,
          });
        }
        return opts;
      }, data, `${members.join(",")}|${JSON.stringify(categories)}|${view.best_member}`, view.total_steps);
    }
    for (const cell of [...box.children]) if (!seen.has(cell.dataset.chart)) cell.remove();
    forget("schedule:");
  }

  function renderScatter(view) {
    const box = $("scatter");
    const trials = view.tree.filter((n) => n.status === "done" && n.score !== null);
    if (!trials.length) {
      box.replaceChildren(el("p", "no trial finished yet", "label"));
      forget("scatter:");
      return;
    }
    const members = [...new Set(trials.map((n) => n.member))].sort((a, b) => a - b);
    for (const cell of [...box.children]) if (!cell.dataset.chart) cell.remove();
    const seen = new Set();
    for (const name of view.hparams) {
      const id = `scatter:${name}`;
      seen.add(id);
      const values = trials.map((n) => n.hparams[name]);
      const categories = categoriesOf(view, name, values);
      const points = trials
        .map((n) => ({ x: toAxis(categories, n.hparams[name]), n }))
        .filter((p) => p.x !== null && !(domainOf(view, name).type === "loguniform" && p.x <= 0))
        .sort((a, b) => a.x - b.x || a.n.id - b.n.id);
      const data = [points.map((p) => p.x)];
      for (const m of members) data.push(points.map((p) => (p.n.member === m ? p.n.score : null)));
      let cell = box.querySelector(`[data-chart="${CSS.escape(id)}"]`);
      if (!cell) {
        cell = el("div", null, "cell");
        cell.dataset.chart = id;
        caption(cell, `${view.metric} against ${name}, one point per finished trial`);
        cell.appendChild(el("div", null, "plot"));
        box.appendChild(cell);
      }
      const lines = (u, idx) => {
        const p = points[idx];
        if (!p) return [];
        const shown = categories ? String(categories[p.x]) : fmt(p.x);
        return [
          [`${name} = ${shown}`, null],
          [`member ${p.n.member}, trial ${p.n.id} (steps ${p.n.start}–${p.n.end}): ${view.metric} ${fmt(p.n.score)}`, memberColor(p.n.member, view.population)],
        ];
      };
      plot(id, cell.lastChild, (width) => {
        const opts = baseOptions(width, 220, name, view.metric, [tooltip(lines)]);
        opts.legend = { show: false };
        opts.cursor.drag = { x: true, y: true, setScale: true };
        hparamAxis(view, name, categories, opts, 0);
        for (const m of members) {
          opts.series.push({
            label: `member ${m}`,
            stroke: memberColor(m, view.population),
            fill: memberColor(m, view.population),
            paths: () => null,
            points: { show: true, size: 7, fill: memberColor(m, view.population) },
          });
        }
        return opts;
      }, data, `${members.join(",")}|${JSON.stringify(categories)}`);
    }
    for (const cell of [...box.children]) if (!seen.has(cell.dataset.chart)) cell.remove();
    forget("scatter:");
  }

  function changeText(change) {
    const [name, before, after, wasActive, isActive] = change;
    const side = (v, active) => (active === false ? "inactive" : fmt(v));
    return `${name} ${side(before, wasActive)} → ${side(after, isActive)}`;
  }

  function renderExploits(view) {
    $("exploits-count").textContent = String(view.jumps.length);
    if (!$("exploits-section").open) return;
    const table = $("exploit-log");
    const head = el("tr");
    for (const text of ["step", "member", "copied member", "its trial", "new trial", "what changed"]) head.appendChild(el("th", text, text === "what changed" ? "text" : ""));
    table.tHead.replaceChildren(head);
    const body = table.tBodies[0];
    body.replaceChildren();
    if (!view.jumps.length) {
      const row = el("tr");
      const cell = el("td", "no exploit yet", "text");
      cell.colSpan = 6;
      row.appendChild(cell);
      body.appendChild(row);
      return;
    }
    const newest = [...view.jumps].sort((a, b) => b.step - a.step || b.trial_id - a.trial_id);
    for (const j of newest) {
      const row = el("tr");
      row.dataset.trial = String(j.trial_id);
      row.appendChild(el("td", fmt(j.step)));
      for (const member of [j.member, j.donor_member]) {
        const cell = el("td");
        const swatch = el("span", null, "swatch");
        swatch.style.background = memberColor(member, view.population);
        cell.appendChild(swatch);
        cell.appendChild(document.createTextNode(String(member)));
        row.appendChild(cell);
      }
      row.appendChild(el("td", fmt(j.donor_trial)));
      row.appendChild(el("td", fmt(j.trial_id)));
      row.appendChild(el("td", j.changes.length ? j.changes.map(changeText).join(", ") : "same hyperparameters", "text"));
      body.appendChild(row);
    }
  }

  function renderLineage(view) {
    const segments = view.lineage;
    $("lineage-summary").textContent = view.best_member === null
      ? "Schedule of the best member's weights"
      : `Schedule of the best member's weights (member ${view.best_member}, ${segments.length} trials, across ${new Set(segments.map((s) => s[2])).size} members)`;
    if (!$("lineage-section").open) return;
    const table = $("lineage-table");
    const head = el("tr");
    for (const text of ["steps", "trained by member", "trial"]) head.appendChild(el("th", text, text === "steps" ? "text" : ""));
    for (const name of view.hparams) head.appendChild(el("th", name));
    table.tHead.replaceChildren(head);
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const [a, b, member, trial, hp] of segments) {
      const row = el("tr");
      row.dataset.trial = String(trial);
      row.appendChild(el("td", `${a}–${b}`, "text"));
      const cell = el("td");
      const swatch = el("span", null, "swatch");
      swatch.style.background = memberColor(member, view.population);
      cell.appendChild(swatch);
      cell.appendChild(document.createTextNode(String(member)));
      row.appendChild(cell);
      row.appendChild(el("td", fmt(trial)));
      for (const name of view.hparams) row.appendChild(el("td", name in hp ? fmt(hp[name]) : "", name in hp ? "" : "inactive"));
      body.appendChild(row);
    }
    const charts = $("lineage-charts");
    if (!segments.length) {
      charts.replaceChildren();
      forget("lineage:");
      return;
    }
    const seen = new Set();
    for (const name of view.hparams) {
      const id = `lineage:${name}`;
      seen.add(id);
      const categories = categoriesOf(view, name, segments.map((s) => s[4][name]));
      const data = stepped([segments.map(([a, b, , , hp]) => [a, b, toAxis(categories, hp[name])])]);
      let cell = charts.querySelector(`[data-chart="${CSS.escape(id)}"]`);
      if (!cell) {
        cell = el("div", null, "cell");
        cell.dataset.chart = id;
        caption(cell, `${name} along the best member's lineage`);
        cell.appendChild(el("div", null, "plot"));
        charts.appendChild(cell);
      }
      const lines = (u, idx) => {
        const x = u.data[0][idx];
        const v = u.data[1][idx];
        const segment = segments.find(([a, b]) => x >= a && x < b) || segments[segments.length - 1];
        if (v === null || v === undefined) return [];
        return [
          [`step ${fmt(x)}: ${name} = ${categories ? String(categories[v]) : fmt(v)}`, null],
          [`trained by member ${segment[2]} (trial ${segment[3]})`, memberColor(segment[2], view.population)],
        ];
      };
      plot(id, cell.lastChild, (width) => {
        const opts = baseOptions(width, 200, "step along the lineage", name, [tooltip(lines)]);
        opts.legend = { show: false };
        hparamAxis(view, name, categories, opts, 1);
        opts.series.push({
          label: name,
          stroke: "#d62728",
          width: 2.2,
          paths: uPlot.paths.stepped({ align: 1 }),
          points: { show: false },
        });
        return opts;
      }, data, `${segments.length}|${JSON.stringify(categories)}`);
    }
    for (const cell of [...charts.children]) if (!seen.has(cell.dataset.chart)) cell.remove();
    forget("lineage:");
  }

  // the family tree, in SVG ----------------------------------------------------------
  function ticks(lo, hi, count) {
    const span = hi - lo;
    const step0 = span / Math.max(count, 1);
    const mag = Math.pow(10, Math.floor(Math.log10(step0)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => span / s <= count) || 10 * mag;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    return out;
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
    const x1 = Math.max(view.total_steps, ...nodes.map((n) => n.end));
    const rows = Math.max(view.population, ...nodes.map((n) => n.member + 1));
    const width = 900;
    const height = Math.max(160, 40 + 26 * rows);
    const left = 64;
    const right = 16;
    const top = 20;
    const bottom = 40;
    const sx = (v) => left + (v / (x1 || 1)) * (width - left - right);
    const rowY = (m) => top + ((m + 0.5) * (height - bottom - top)) / rows;
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
    root.appendChild(svg("title", {}, "family tree"));
    const axis = svg("g", { class: "axis" });
    axis.appendChild(svg("line", { x1: left, x2: width - right, y1: height - bottom, y2: height - bottom }));
    for (const t of ticks(0, x1, 8)) {
      axis.appendChild(svg("line", { x1: sx(t), x2: sx(t), y1: height - bottom, y2: height - bottom + 4 }));
      axis.appendChild(svg("text", { x: sx(t), y: height - bottom + 16, "text-anchor": "middle" }, fmt(t)));
    }
    axis.appendChild(svg("text", { class: "label", x: (left + width - right) / 2, y: height - 6, "text-anchor": "middle" }, "step"));
    axis.appendChild(svg("text", { class: "label", x: 12, y: top }, "member"));
    for (let m = 0; m < rows; m += 1) {
      axis.appendChild(svg("text", { class: "label", x: left - 8, y: rowY(m) + 4, "text-anchor": "end" }, String(m)));
    }
    root.appendChild(axis);
    const rank = rankOf(nodes.map((n) => n.score), view.mode);
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
        fill: done ? scoreColor(rank(n.score)) : "#ffffff",
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
    box.appendChild(root);
    const key = el("div", null, "legend");
    for (const [text, color] of [["continue", "#9e9e9e"], ["exploit (copied a member)", "#ff7f0e"], ["lineage of the best member", "#d62728"]]) {
      key.appendChild(swatchLine(text, color));
    }
    key.appendChild(el("span", `node colour: ${view.metric} by rank (see the table's key); hollow: training`));
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

  const SECTIONS = ["population-section", "curves-section", "best-section", "schedules-section", "scatter-section", "lineage-section", "exploits-section", "tree-section"];

  function render(view) {
    state.view = view;
    for (const id of SECTIONS) show(id, true); // charts measure their boxes: show them first
    renderStatus(view);
    renderMembers(view);
    renderMetricPicker(view);
    renderCurves(view);
    renderBestSoFar(view);
    renderSchedules(view);
    renderScatter(view);
    renderLineage(view);
    renderExploits(view);
    renderTree(view);
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
        if (call === state.calls) render(view);
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

  function resize() {
    for (const entry of state.charts.values()) {
      const box = entry.u.root.parentElement;
      if (box && box.clientWidth) entry.u.setSize({ width: Math.max(320, Math.floor(box.clientWidth)), height: entry.u.height });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("metric").addEventListener("change", (event) => {
      state.metric = event.target.value;
      const url = new URL(window.location.href);
      url.searchParams.set("metric", state.metric);
      window.history.replaceState(null, "", url);
      refresh();
    });
    $("members").tHead.addEventListener("click", (event) => {
      const button = event.target.closest("button.sort");
      if (!button) return;
      const key = button.dataset.key;
      state.sort = state.sort.key === key ? { key, dir: -state.sort.dir } : { key, dir: key === "score" && state.view && state.view.mode === "max" ? -1 : 1 };
      if (state.view) renderMembers(state.view);
    });
    $("member-filter").addEventListener("input", (event) => {
      state.filter = event.target.value;
      if (state.view) renderMembers(state.view);
    });
    for (const [id, draw] of [["exploits-section", renderExploits], ["lineage-section", renderLineage]]) {
      $(id).addEventListener("toggle", () => { if (state.view) draw(state.view); });
    }
    let pending = null;
    window.addEventListener("resize", () => {
      window.clearTimeout(pending);
      pending = window.setTimeout(resize, 150);
    });
    refresh();
  });
})();
