// The dashboard's script: inlined into dashboard.html when it is written (sweeplib/dashboard.py).
// It reads everything, labels included, from the JSON embedded in the page (#dashboard-data).
"use strict";
const DATA = JSON.parse(document.getElementById("dashboard-data").textContent);
const HEADLINE = "headline";   // the default view: each set's headline metric (see metricOf)
const METRIC_KEYS = [HEADLINE, ...DATA.metrics.map(m => m.key)];
const METRIC_LABEL = Object.fromEntries([[HEADLINE, "headline metric of each set"],
                                          ...DATA.metrics.map(m => [m.key, m.label])]);
const TM_VALUES = ["value", "auroc", "auroc_vs_reference_negatives", "detection_rate"];
const METRIC_SHORT = Object.fromEntries(DATA.metrics.map(m => [m.key, m.short]));
const TM_LABEL = {...METRIC_LABEL, value: "headline metric"};

// ---- helpers --------------------------------------------------------------------------------
function esc(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}
// tag("circle", {cx: 1}, "<title>..</title>") -> markup; attributes are escaped, inner is not
function tag(name, attrs, inner) {
  const a = Object.entries(attrs || {}).filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => ` ${k}="${esc(v)}"`).join("");
  return `<${name}${a}>${inner || ""}</${name}>`;
}
function title(text) { return tag("title", {}, esc(text)); }
function f3(v) { return v === null || v === undefined ? "n/a" : v.toFixed(3); }
function pct(v) { return v === null || v === undefined ? "n/a" : (100 * v).toFixed(1) + "%"; }
function ciText(ci) { return ci && ci[0] !== null ? ` [${f3(ci[0])}, ${f3(ci[1])}]` : ""; }
function stepLabel(cell, k) {
  const s = cell.steps.find(x => x.step === k);
  return s ? `${k} ${s.name}` : String(k);
}
function encodeValue(v) { return encodeURIComponent(v).replace(/%2F/g, "/"); }

// ---- state in the URL fragment --------------------------------------------------------------
function readState() {
  const p = new URLSearchParams(location.hash.replace(/^#/, ""));
  const notes = [];
  const s = {metric: p.get("metric") || HEADLINE, cell: p.get("cell"),
             compare: p.get("compare") || "", tm: p.get("tm") || "value"};
  if (!METRIC_KEYS.includes(s.metric)) {
    notes.push(`unknown metric '${s.metric}' in the URL; showing AUROC`);
    s.metric = "auroc";
  }
  if (s.cell === null) s.cell = DATA.cell_order[0];
  if (!(s.cell in DATA.cells)) {
    notes.push(`cell '${s.cell}' not found; showing '${DATA.cell_order[0]}'`);
    s.cell = DATA.cell_order[0];
  }
  if (s.compare && !(s.compare in DATA.cells)) {
    notes.push(`compare cell '${s.compare}' not found`);
    s.compare = "";
  }
  if (s.compare === s.cell) s.compare = "";
  if (!TM_VALUES.includes(s.tm)) s.tm = "value";
  s.notes = notes;
  return s;
}
function writeState(s) {
  const parts = [["metric", s.metric], ["cell", s.cell]];
  if (s.compare) parts.push(["compare", s.compare]);
  if (s.tm !== "value") parts.push(["tm", s.tm]);
  location.hash = parts.map(([k, v]) => `${k}=${encodeValue(v)}`).join("&");
}
function change(key, value) {
  const s = readState();
  s[key] = value;
  writeState(s);
}

// ---- view 1: metric per step ----------------------------------------------------------------
function undefinedReason(set, metric) {
  if (set.kind === "single-class" && (metric === "auroc"))
    return "undefined for this set (single class)";
  if (set.kind === "two-class" && metric === "auroc_vs_reference_negatives")
    return "undefined for this set (two-class: see AUROC)";
  if (set.kind === "single-class") return "undefined for this set (single class)";
  return "undefined for this set (no value at any step)";
}

// the metric a chart shows: the chosen one, or in the headline view the set's own headline
function metricOf(set, metric) {
  return metric === HEADLINE ? (set.headline || "auroc") : metric;
}
// in-distribution sets are drawn blue and solid; OOD and extra sets orange and dashed
function isOOD(set) { return set.role !== "in-distribution"; }

function metricChart(cellKey, name, chosen) {
  const cell = DATA.cells[cellKey], set = cell.sets[name], metric = metricOf(set, chosen);
  const W = 380, H = 220, L = 40, R = 14, T = 14, B = 44;
  const steps = cell.steps.map(s => s.step);
  const x = i => L + (i + 0.5) * (W - L - R) / steps.length;
  const y = v => T + (1 - Math.max(0, Math.min(1, v))) * (H - T - B);
  const color = isOOD(set) ? "var(--ood)" : "var(--ind)";
  const dash = isOOD(set) ? "6 3" : null;
  let g = "";
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    g += tag("line", {class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v)});
    g += tag("text", {x: L - 5, y: y(v) + 3, "text-anchor": "end"}, v.toFixed(2));
  }
  g += tag("text", {class: "y-label", x: 9, y: (T + H - B) / 2, "text-anchor": "middle",
                    transform: `rotate(-90 9 ${(T + H - B) / 2})`}, esc(METRIC_SHORT[metric] || metric));
  const pts = steps.map((k, i) => {
    const row = set.rows[k];
    const cellv = row ? row[metric] : null;
    return {k, i, row, v: cellv ? cellv.value : null, ci: cellv ? cellv.ci : null};
  });
  const defined = pts.filter(p => p.v !== null && p.v !== undefined);
  if (metric.startsWith("auroc") && defined.length)
    g += tag("line", {class: "chance", x1: L, x2: W - R, y1: y(0.5), y2: y(0.5)},
             title("chance (0.5)"));
  g += tag("line", {class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B});
  steps.forEach((k, i) => {
    g += tag("text", {x: x(i), y: H - B + 14, "text-anchor": "middle"}, esc(k));
    const nm = cell.steps[i].name, room = Math.max(3, Math.floor((W - L - R) / steps.length / 5.6));
    g += tag("text", {x: x(i), y: H - B + 26, "text-anchor": "middle", class: "step-name"},
             esc(nm.length > room ? nm.slice(0, room - 1) + "\u2026" : nm) + title(stepLabel(cell, k)));
  });
  if (!defined.length) {
    g += tag("text", {class: "undefined-note", x: (L + W - R) / 2, y: y(0.62),
                      "text-anchor": "middle"}, esc(undefinedReason(set, metric)));
  }
  // CI bands over runs of consecutive steps with a CI; whiskers at every point
  let run = [];
  const flush = () => {
    if (run.length > 1) {
      const up = run.map(p => `${x(p.i)},${y(p.ci[1])}`);
      const down = run.slice().reverse().map(p => `${x(p.i)},${y(p.ci[0])}`);
      g += tag("polygon", {class: "ci-band", points: up.concat(down).join(" "), fill: color,
                           "fill-opacity": 0.13, stroke: "none"});
    }
    run = [];
  };
  pts.forEach(p => {
    const has = p.v !== null && p.v !== undefined && p.ci && p.ci[0] !== null && p.ci[1] !== null;
    if (has) run.push(p); else flush();
  });
  flush();
  for (const p of defined) {
    if (p.ci && p.ci[0] !== null)
      g += tag("line", {class: "ci-whisker", x1: x(p.i), x2: x(p.i), y1: y(p.ci[0]),
                        y2: y(p.ci[1]), stroke: color, "stroke-opacity": 0.5});
  }
  for (let j = 1; j < defined.length; j++) {
    const a = defined[j - 1], b = defined[j];
    g += tag("line", {class: "trend", x1: x(a.i), y1: y(a.v), x2: x(b.i), y2: y(b.v),
                      stroke: color, "stroke-width": 2, "stroke-dasharray": dash});
  }
  for (const p of defined) {
    const tip = `${name} \u00b7 step ${stepLabel(cell, p.k)}\n${METRIC_LABEL[metric]} = ` +
      `${p.v.toFixed(4)}${ciText(p.ci)}\nn = ${p.row.n} (AF ${p.row.af})`;
    g += tag("circle", {class: "point", cx: x(p.i), cy: y(p.v), r: 4.5, fill: color,
                        stroke: "#fff", "stroke-width": 1.5, "data-step": p.k,
                        "data-value": p.v, "data-n": p.row.n}, title(tip));
    g += tag("text", {x: x(p.i) + 6, y: y(p.v) - 6, class: "value-label"}, p.v.toFixed(3));
  }
  for (const p of pts) {
    if (defined.length && (p.v === null || p.v === undefined)) {
      const why = p.row ? "value undefined at this step" : "set not evaluated at this step";
      g += tag("text", {class: "missing", x: x(p.i), y: H - B - 6, "text-anchor": "middle"},
               "n/a" + title(`${name} \u00b7 step ${stepLabel(cell, p.k)}: ${why}`));
    }
  }
  const svg = tag("svg", {class: "metric-chart", "data-set": name, "data-metric": metric,
                          "data-cell": cellKey, "data-role": set.role, "data-kind": set.kind,
                          width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
                          "aria-label": `${METRIC_LABEL[metric]} per step, ${name}`}, g);
  const head = tag("h3", {}, esc(set.title) + ` <span class="meta">(${esc(name)})</span>` +
    tag("span", {class: `tag ${set.role}`}, esc(set.role)) +
    tag("span", {class: "tag kind"}, esc(set.kind)) +
    (set.confounded_from !== null && set.confounded_from !== undefined
      ? tag("span", {class: "tag confounded", title: "all-AF set ranked against another " +
          "source's negatives: from this step on it measures source identity, not intent; " +
          "the verdict does not use it"}, `confounded by source from step ${set.confounded_from}`)
      : ""));
  const ref = set.reference && metric === "auroc_vs_reference_negatives"
    ? tag("div", {class: "note"}, `reference negatives: ${esc(set.reference)}`) : "";
  return tag("div", {class: `card ${set.role}`}, head + svg + ref);
}

function metricView(cellKey, metric) {
  const cell = DATA.cells[cellKey];
  if (!cell.set_order.length) return tag("p", {class: "note"}, "no eval sets in this cell");
  return tag("div", {class: "charts"}, cell.set_order.map(n => metricChart(cellKey, n, metric))
    .join(""));
}

// ---- view 2: score distributions ------------------------------------------------------------
function histogram(cellKey, name, k) {
  const cell = DATA.cells[cellKey], set = cell.sets[name], h = set.hist;
  const c = h.counts[k];
  const yMax = c ? Math.max(1, ...c.af, ...c.neg) : 1;  // each panel scaled to its tallest bar
  const W = 170, H = 104, L = 6, R = 6, T = 12, B = 16, mid = T + (H - T - B) / 2;
  const lo = h.edges[0], hi = h.edges[h.edges.length - 1];
  const x = v => L + (v - lo) / (hi - lo) * (W - L - R);
  const half = (H - T - B) / 2;
  const hgt = n => yMax ? n / yMax * (half - 1) : 0;
  let g = tag("text", {x: W / 2, y: 9, "text-anchor": "middle"}, `step ${esc(stepLabel(cell, k))}`);
  if (!c) {
    g += tag("text", {class: "undefined-note", x: W / 2, y: mid, "text-anchor": "middle"},
             "no scores");
  } else {
    const last = h.edges.length - 2;
    for (let b = 0; b <= last; b++) {
      const x0 = x(h.edges[b]), w = Math.max(0.5, x(h.edges[b + 1]) - x0 - 0.5);
      const range = `${b === 0 && c.below ? "\u2264 " : ""}[${h.edges[b].toFixed(2)}, ` +
        `${h.edges[b + 1].toFixed(2)}${b === last ? "]" : ")"}${b === last && c.above ? " and above" : ""}`;
      const tip = `${name} \u00b7 step ${stepLabel(cell, k)}\nscore (log-odds) ${range}\n` +
        `AF: ${c.af[b]}, not AF: ${c.neg[b]}`;
      if (c.af[b]) g += tag("rect", {class: "bar af", x: x0, y: mid - hgt(c.af[b]), width: w,
                                     height: hgt(c.af[b]), fill: "var(--af)"}, title(tip));
      if (c.neg[b]) g += tag("rect", {class: "bar neg", x: x0, y: mid, width: w,
                                      height: hgt(c.neg[b]), fill: "var(--neg)"}, title(tip));
    }
  }
  g += tag("line", {class: "axis", x1: L, x2: W - R, y1: mid, y2: mid});
  const thr = (cell.steps.find(s => s.step === k) || {}).thresholds || {};
  const marks = [[0, "p = 0.5 (score 0)", "#0f172a", null]];
  if (thr["5"] !== undefined) marks.push([thr["5"], "5% train-FPR threshold", "#7c3aed", "3 2"]);
  for (const [v, label, col, dash] of marks) {
    if (v >= lo && v <= hi)
      g += tag("line", {class: "threshold", x1: x(v), x2: x(v), y1: T, y2: H - B, stroke: col,
                        "stroke-dasharray": dash},
               title(`${label}: log-odds ${v.toFixed(3)}`));
  }
  g += tag("text", {x: L, y: H - 4}, lo.toFixed(1));
  g += tag("text", {x: W - R, y: H - 4, "text-anchor": "end"}, hi.toFixed(1));
  const n = c ? c.af.reduce((a, b) => a + b, 0) + c.neg.reduce((a, b) => a + b, 0) : 0;
  return tag("svg", {class: "hist", "data-set": name, "data-step": k, "data-cell": cellKey,
                     "data-n": n, width: W, height: H, viewBox: `0 0 ${W} ${H}`},
             title(`${name}, step ${stepLabel(cell, k)}: n = ${n}` +
                   (c && (c.below || c.above) ? ` (${c.below} below and ${c.above} above ` +
                    "the range, counted in the end bins)" : "")) + g);
}

function histView(cellKey) {
  const cell = DATA.cells[cellKey];
  let out = "";
  for (const name of cell.set_order) {
    const set = cell.sets[name];
    let body;
    if (!set.hist) {
      body = tag("span", {class: "note"}, "no per-sample scores found for this set");
    } else {
      body = cell.steps.map(s => histogram(cellKey, name, s.step)).join("");
    }
    out += tag("div", {class: "hist-row"},
               tag("div", {class: "hist-label"}, `<b>${esc(name)}</b><br>` +
                   tag("span", {class: `tag ${set.role}`}, esc(set.role))) + body);
  }
  return out;
}

// ---- view 3: benchmark per class -----------------------------------------------------------
function perClassView(cellKey) {
  const cell = DATA.cells[cellKey], set = cell.sets["benchmark"];
  if (!set || !Object.keys(set.per_class).length)
    return tag("p", {class: "note"}, "no benchmark evaluation in this cell");
  const steps = cell.steps.map(s => s.step).filter(k => k in set.per_class);
  const classes = [...new Set(steps.flatMap(k => Object.keys(set.per_class[k])))].sort();
  let head = tag("th", {class: "name", rowspan: 2}, "class");
  let head2 = "";
  for (const k of steps) {
    head += tag("th", {colspan: 2}, `step ${esc(stepLabel(cell, k))}`);
    head2 += tag("th", {}, "@ 0.5") + tag("th", {}, "@ 5% thr.");
  }
  let rows = "";
  for (const cls of classes) {
    const isAF = DATA.af_classes.includes(cls);
    let tds = tag("td", {class: "name"}, esc(cls) + (isAF ? ' <span class="tag" ' +
      'style="background:var(--af)">AF</span>' : ""));
    for (const k of steps) {
      const r = set.per_class[k][cls];
      for (const key of ["flagged_at_0.5", "flagged_at_fpr_5"]) {
        if (!r || r[key] === undefined || r[key] === null) { tds += tag("td", {}, "n/a"); continue; }
        const v = r[key], hue = isAF ? "185,28,28" : "71,85,105";
        const what = key === "flagged_at_0.5" ? "at probability 0.5" : "at the 5% train-FPR threshold";
        tds += tag("td", {class: "pc", "data-step": k, "data-class": cls, "data-key": key,
                          "data-value": v, style: `background: rgba(${hue},${(0.08 + 0.5 * v).toFixed(3)})`,
                          title: `${cls}, step ${stepLabel(cell, k)}: ${Math.round(v * r.n)} of ` +
                                 `${r.n} flagged ${what} (${pct(v)})`}, pct(v));
      }
    }
    rows += tag("tr", {}, tds);
  }
  return tag("table", {class: "per-class"}, tag("tr", {}, head) + tag("tr", {}, head2) + rows) +
    tag("p", {class: "note"}, "Share of each fine class flagged as AF. AF classes should be " +
        "flagged, the others (hard negatives especially) should not.");
}

// ---- view 4: cells overview -----------------------------------------------------------------
function lastValue(cell, name, metric) {
  const set = cell.sets[name];
  if (!set) return null;
  const m = metricOf(set, metric);
  const ks = set.steps.filter(k => set.rows[k] && set.rows[k][m] && set.rows[k][m].value !== null);
  return ks.length ? {k: ks[ks.length - 1], v: set.rows[ks[ks.length - 1]][m].value, m} : null;
}

function cellsView(s) {
  const names = [...new Set(DATA.cell_order.flatMap(c => DATA.cells[c].set_order))];
  let head = ["cell", "steps", "layer", "config", "data"].map(h => tag("th", {class: "name"}, h))
    .join("") + names.map(n => tag("th", {}, esc(n))).join("") + tag("th", {}, "");
  let rows = "";
  for (const key of DATA.cell_order) {
    const c = DATA.cells[key];
    const cfg = Object.entries(c.config).filter(([k]) => ["C", "penalty", "repeats"].includes(k))
      .map(([k, v]) => `${k}=${v}`).join(" ");
    let tds = tag("td", {class: "name"}, `<b>${esc(key === "." ? ". (main sweep)" : key)}</b>`) +
      tag("td", {class: "name"}, esc(c.steps.map(x => x.step).join(" "))) +
      tag("td", {class: "name"}, esc(c.layer ?? "?")) + tag("td", {class: "name"}, esc(cfg)) +
      tag("td", {class: "name"}, c.data_source === "demo" ? '<span class="tag demo">demo</span>'
                                                         : esc(c.data_source ?? "?"));
    for (const n of names) {
      const lv = lastValue(c, n, s.metric);
      tds += tag("td", {title: lv ? `${n}, step ${stepLabel(c, lv.k)}: ${METRIC_LABEL[lv.m]} ` +
                                    `= ${lv.v.toFixed(4)}` : `${n}: undefined`}, lv ? f3(lv.v) : "\u2014");
    }
    tds += tag("td", {}, tag("button", {"data-show": key}, "show") + " " +
               tag("button", {"data-compare": key}, "compare"));
    rows += tag("tr", {class: key === s.cell || key === s.compare ? "current" : null,
                       "data-cell": key}, tds);
  }
  return tag("h2", {}, `Cells (${DATA.cell_order.length})`) +
    tag("p", {class: "note"}, `Every results folder with step files. Values: ` +
        `${esc(METRIC_LABEL[s.metric])} at the last step that defines it.`) +
    tag("div", {class: "col"}, tag("table", {class: "cells-table"}, tag("tr", {}, head) + rows));
}

// ---- view 5: transfer matrix ----------------------------------------------------------------
function transferView(s) {
  const tm = DATA.transfer;
  if (!tm) return "";
  const cw = 110, ch = 34, L = 170, T = 70;
  const W = L + cw * tm.eval_sets.length + 10, H = T + ch * tm.train_mixes.length + 10;
  let g = "";
  tm.eval_sets.forEach((e, j) => {
    g += tag("text", {x: L + cw * (j + 0.5), y: T - 8, "text-anchor": "middle",
                      style: "font-size:11px"}, esc(e));
  });
  tm.train_mixes.forEach((mix, i) => {
    g += tag("text", {x: L - 8, y: T + ch * (i + 0.5) + 4, "text-anchor": "end",
                      style: "font-size:11px"}, esc(mix));
    tm.eval_sets.forEach((e, j) => {
      const c = ((tm.cells || {})[mix] || {})[e] || {};
      const v = c[s.tm] ?? null;
      const label = METRIC_SHORT[c.headline] || c.headline || "headline";
      // ranking metrics: chance (0.5) is white, above it blue, below it orange, both darker
      // the farther from chance; detection rates: 0 white to 1 blue
      const ranks = s.tm !== "detection_rate" && (s.tm !== "value" || c.headline !== "detection_rate");
      const depth = v === null ? 0 : ranks ? Math.abs(v - 0.5) * 2 : v;
      const dark = depth > 0.6;
      const fill = v === null ? "#e2e8f0" :
        `hsl(${ranks && v < 0.5 ? 25 : 215}, 70%, ${Math.round(96 - 56 * depth)}%)`;
      const tip = `train ${mix} \u2192 eval ${e}\n` +
        `headline (${c.headline ?? "n/a"}): ${f3(c.value ?? null)}\n` +
        `AUROC: ${f3(c.auroc ?? null)}\nAUROC vs ref. negatives: ` +
        `${f3(c.auroc_vs_reference_negatives ?? null)}\ndetection rate: ${f3(c.detection_rate ?? null)}` +
        (c.n !== undefined ? `\nn = ${c.n}` : "");
      g += tag("rect", {class: "tm-cell", x: L + cw * j + 1, y: T + ch * i + 1, width: cw - 2,
                        height: ch - 2, fill, "data-mix": mix, "data-set": e,
                        "data-value": v}, title(tip));
      g += tag("text", {x: L + cw * (j + 0.5), y: T + ch * (i + 0.5) + 4, "text-anchor": "middle",
                        style: `font-size:11px; fill:${dark ? "#fff" : "#0f172a"}`},
               v === null ? "n/a" : f3(v) + title(tip));
      if (v !== null && s.tm === "value")
        g += tag("text", {x: L + cw * (j + 0.5), y: T + ch * (i + 1) - 4, "text-anchor": "middle",
                          style: "font-size:9px; fill:" + (dark ? "#e2e8f0" : "#475569")},
                 esc(label));
    });
  });
  g += tag("text", {x: L, y: 14, style: "font-size:11px"}, "evaluated on \u2192");
  g += tag("text", {x: 4, y: T - 8, style: "font-size:11px"}, "trained on \u2193");
  const opts = TM_VALUES.map(v => tag("option", {value: v, selected: v === s.tm ? "" : null},
                                      esc(TM_LABEL[v]))).join("");
  return tag("h2", {}, "Transfer matrix") +
    tag("div", {class: "controls"}, tag("label", {}, "value " +
        tag("select", {id: "tm-select"}, opts))) +
    tag("div", {class: "col"}, tag("svg", {class: "transfer-heatmap", width: W, height: H,
                                           viewBox: `0 0 ${W} ${H}`}, g));
}

// ---- page -----------------------------------------------------------------------------------
function cellHeading(key) {
  const c = DATA.cells[key];
  return tag("div", {class: "col-head"}, esc(key === "." ? ". (main sweep)" : key) +
    (c.data_source === "demo" ? ' <span class="tag demo">demo</span>' : "") +
    tag("span", {class: "meta"}, ` \u00b7 layer ${esc(c.layer ?? "?")} \u00b7 steps ` +
        esc(c.steps.map(x => x.step).join(", "))));
}
function warnings(key) {
  return DATA.cells[key].warnings.map(w => tag("div", {class: "warn"}, esc(w))).join("");
}
// one cell, or two side by side
function perCell(s, fn) {
  if (!s.compare) return cellHeading(s.cell) + warnings(s.cell) + fn(s.cell);
  return tag("div", {class: "pair"}, [s.cell, s.compare].map(k =>
    tag("div", {class: "col"}, cellHeading(k) + warnings(k) + fn(k))).join(""));
}

function summaryView() {
  const sm = DATA.summary;
  if (!sm || !sm.verdict) return "";
  const v = sm.verdict, c = v.criteria || {};
  const list = items => tag("ul", {}, items.map(x => tag("li", {}, esc(x))).join(""));
  const premises = (v.premises || []).map(p => tag("li", {class: p.passed ? "ok" : "failed"},
    `${p.passed ? "ok" : "FAILED"}: ${esc(p.name)}: ${esc(p.detail)}`)).join("");
  const left = (v.sets_excluded || []).map(x => `${x.set} (${x.reason})`);
  const findings = (sm.findings || []).filter(f => !/^premise (ok|FAILED):/.test(f));
  return (sm.answer ? tag("h2", {}, "Answer") + tag("pre", {id: "answer"}, esc(sm.answer)) : "") +
    tag("h2", {}, "Main sweep: verdict") + answerView(sm.methods) +
    tag("p", {id: "verdict-outcome"}, `<b>${esc(v.outcome)}</b>: ${esc(v.summary || "")}`) +
    list(v.reasons || []) +
    tag("h3", {}, "Premise checks") + tag("ul", {id: "premises"}, premises) +
    tag("p", {class: "note"}, `Sets used: ${esc((v.sets_used || []).join(", ") || "none")}` +
        (left.length ? `; left out: ${esc(left.join("; "))}` : "")) +
    tag("p", {class: "note"}, `Family-wise alpha ${Number(c.alpha).toFixed(2)} (Holm over the OOD sets used); ` +
        `gold_106 tolerance ${c.gold_tolerance}; base gold_106 AUROC lower bound >= ` +
        `${c.min_base_auroc}; >= ${c.min_per_class} rows per class; conditional on seed ` +
        `${v.conditional_on_seed}.`) +
    // the premises are listed above; the findings without them
    (findings.length ? tag("h3", {}, "Findings") + list(findings) : "");
}

function setupControls() {
  document.getElementById("title").textContent = DATA.title;
  document.getElementById("meta").textContent =
    `${DATA.results_dir} \u00b7 ${DATA.cell_order.length} cell(s) \u00b7 generated ${DATA.generated}`;
  document.getElementById("metric-select").innerHTML = METRIC_KEYS
    .map(k => tag("option", {value: k}, esc(METRIC_LABEL[k]))).join("");
  const cells = DATA.cell_order.map(c => tag("option", {value: c},
                                             esc(c === "." ? ". (main sweep)" : c))).join("");
  document.getElementById("cell-select").innerHTML = cells;
  document.getElementById("compare-select").innerHTML = tag("option", {value: ""}, "(none)") + cells;
  document.getElementById("metric-select").addEventListener("change", e => change("metric", e.target.value));
  document.getElementById("cell-select").addEventListener("change", e => change("cell", e.target.value));
  document.getElementById("compare-select").addEventListener("change", e => change("compare", e.target.value));
  document.body.addEventListener("change", e => {
    if (e.target.id === "tm-select") change("tm", e.target.value);
  });
  document.body.addEventListener("click", e => {
    const t = e.target;
    if (t.dataset && t.dataset.show !== undefined) change("cell", t.dataset.show);
    if (t.dataset && t.dataset.compare !== undefined) change("compare", t.dataset.compare);
  });
  const demo = DATA.cell_order.filter(c => DATA.cells[c].data_source === "demo");
  if (demo.length) {
    document.getElementById("banner").innerHTML = tag("div", {class: "banner", id: "demo-banner"},
      "SYNTHETIC DEMO DATA: " + (demo.length === DATA.cell_order.length ? "every cell" :
        `${demo.length} of ${DATA.cell_order.length} cells`) +
      " came from the generated demo cache (demo_data.py), not real activations. " +
      "The numbers only exercise the pipeline.");
  }
}

function render() {
  const s = readState();
  document.getElementById("metric-select").value = s.metric;
  document.getElementById("cell-select").value = s.cell;
  document.getElementById("compare-select").value = s.compare;
  document.body.dataset.metric = s.metric;
  document.body.dataset.cell = s.cell;
  document.body.dataset.compare = s.compare;
  document.getElementById("notices").innerHTML =
    s.notes.map(n => tag("div", {class: "warn"}, esc(n))).join("");
  const section = (id, html) => {
    const el = document.getElementById(id);
    el.innerHTML = html;
    el.hidden = !html;
  };
  section("summary-section", summaryView());
  section("metric-section", tag("h2", {}, `${esc(METRIC_LABEL[s.metric])} per step`) +
    tag("p", {class: "note"}, "Points: value on the eval set; band and whiskers: 95% interval (Clopper-Pearson for " +
        "rates, score interval for AUROC). " +
        "Blue solid: in-distribution; orange dashed: OOD and extra eval sets.") + perCell(s, k => metricView(k, s.metric)));
  section("hist-section", tag("h2", {}, "Score distributions (log-odds)") +
    tag("p", {class: "note"}, "AF samples above the axis, not-AF below; black line: p = 0.5 " +
        "(score 0); purple dashed: the 5% train-FPR threshold (when in range). Bins are shared " +
        "across the steps of a set; each panel is scaled to its tallest bar (hover for counts).") + perCell(s, histView));
  section("perclass-section", tag("h2", {}, "Benchmark per class: flagged fraction") +
    perCell(s, perClassView));
  section("cells-section", DATA.cell_order.length > 1 ? cellsView(s) : "");
  section("transfer-section", transferView(s));
}

setupControls();
window.addEventListener("hashchange", render);
render();
