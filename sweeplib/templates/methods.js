// The method arms on the dashboard (appended to dashboard.js; uses its tag() and esc()).
function answerView(m) {
  // a method x step AUROC table per intent-measuring OOD set (the answer block says the answer)
  if (!m) return "";
  const num = x => Number(x).toFixed(3), sgn = x => (x >= 0 ? "+" : "") + Number(x).toFixed(3);
  const cell = c => !c ? "-" : `${num(c.value)} [${num(c.ci[0])}, ${num(c.ci[1])}]` +
    (c.delta === undefined ? "" : ` ${sgn(c.delta)} [${sgn(c.delta_ci[0])}, ${sgn(c.delta_ci[1])}]`);
  const tables = Object.entries(m.tables || {}).map(([name, rows]) => {
    const steps = [...new Set(rows.flatMap(r => Object.keys(r.cells)))].sort((a, b) => a - b);
    const head = tag("tr", {}, tag("th", {}, "method") + steps.map(k => tag("th", {}, `step ${k}`)).join(""));
    const body = rows.map(r => tag("tr", {}, tag("td", {}, esc(r.method + (r.transductive ? "*" : ""))) +
      steps.map(k => tag("td", {}, cell(r.cells[k]))).join(""))).join("");
    return tag("h3", {}, `${esc(name)}: AUROC by method and step, change vs the reference (lr) at the same step`) +
      tag("table", {class: "methods"}, head + body);
  }).join("");
  return tables + (tables ? tag("p", {class: "note"}, "* transductive: uses unlabelled eval rows") : "");
}
