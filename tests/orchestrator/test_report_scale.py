"""The report of a large sweep: a summary per (target, mechanism) and a trials table that sorts
and filters in the browser (its inline script run under Node with a minimal DOM), rendered for
1,000 trials."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import time
from types import SimpleNamespace

import pytest

from orchestrator.report import _html, summary_rows

MECHS = ("gaussian", "laplace", "lmo")


def rows_of(n: int) -> list[dict]:
    out = []
    for i in range(n):
        mech, eps = MECHS[i % 3], (1.0, 2.0, 4.0, 8.0)[(i // 3) % 4]
        failed = i % 97 == 5
        out.append(
            {
                "key": f"eps={eps:g}_{mech}_seed={i}", "mechanism": mech, "epsilon_target": eps,
                "epsilon": None if failed else eps * (0.9 + (i % 7) / 100), "seed": i,
                "learning_rate": 0.01 * (1 + i % 5), "status": "failed" if failed else "finished",
                "accuracy": None if failed else 0.5 + (i % 11) / 40,
                "val_accuracy": None if failed else 0.5 + (i % 13) / 40,
            }
        )  # fmt: skip
    return out


PARENT = SimpleNamespace(info=SimpleNamespace(run_id="p" * 32), data=SimpleNamespace(tags={}))


def test_summary_counts_every_trial_per_target_and_mechanism():
    rows = rows_of(1000)
    table = summary_rows(rows)
    assert len(table) == 12 and sum(r["trials"] for r in table) == 1000
    assert sum(r["failed"] for r in table) == sum(r["status"] == "failed" for r in rows)
    g1 = next(r for r in table if r["epsilon_target"] == 1.0 and r["mechanism"] == "gaussian")
    mine = [r for r in rows if r["epsilon_target"] == 1.0 and r["mechanism"] == "gaussian"]
    assert g1["best_val_accuracy"] == max(r["val_accuracy"] for r in mine if r["val_accuracy"] is not None)
    assert g1["epsilon_max"] == max(r["epsilon"] for r in mine if r["epsilon"] is not None)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the page's script")
def test_a_thousand_trials_render_and_the_table_sorts_and_filters(tmp_path):
    rows = rows_of(1000)
    started = time.perf_counter()
    page = _html("big", PARENT, rows, [], [])
    assert time.perf_counter() - started < 5
    assert "Summary per target and mechanism" in page and page.count("<tr>") > 1000
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # still one self-contained file
    table = page.split('<table id="trials">', 1)[1].split("</table>", 1)[0]
    head = re.findall(r"<th>(.*?)</th>", table.split("</thead>", 1)[0])
    body = [
        [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", tr)]
        for tr in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>", 1)[1])
    ]
    script = page.split("<script>", 1)[1].split("</script>", 1)[0]
    harness = tmp_path / "run.js"
    harness.write_text(
        DOM
        + f"\nvar HEAD = {json.dumps(head)};\nvar BODY = {json.dumps(body)};\n"
        + TEST
        + "\n"
        + script
        + "\n"
        + CHECK
    )
    proc = subprocess.run(["node", str(harness)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    accuracy = head.index("test_accuracy")
    numbers = [float(r[accuracy]) for r in body if r[accuracy]]
    assert [float(x) for x in result["asc"][: len(numbers)]] == sorted(numbers)
    assert result["asc"][len(numbers) :] == [""] * (len(body) - len(numbers))  # empty cells last
    assert [float(x) for x in result["desc"][: len(numbers)]] == sorted(numbers, reverse=True)
    assert result["mech_sorted"][0] == "gaussian" and result["mech_sorted"][-1] == "lmo"
    assert result["visible_failed"] == sum(r["status"] == "failed" for r in rows)


# A minimal DOM: the table, its rows and cells, the filter box, click and input events.
DOM = """
function El(tag) { this.tag = tag; this.children = []; this.attrs = {}; this.style = {}; this.handlers = {}; }
El.prototype.getAttribute = function (k) { return k in this.attrs ? this.attrs[k] : null; };
El.prototype.setAttribute = function (k, v) { this.attrs[k] = String(v); };
El.prototype.addEventListener = function (e, f) { this.handlers[e] = f; };
El.prototype.appendChild = function (c) {
  var i = this.children.indexOf(c); if (i >= 0) this.children.splice(i, 1); this.children.push(c); return c;
};
Object.defineProperty(El.prototype, "rows", { get: function () { return this.children; } });
Object.defineProperty(El.prototype, "cells", { get: function () { return this.children; } });
Object.defineProperty(El.prototype, "textContent", { get: function () {
  return this.text !== undefined ? this.text : this.children.map(function (c) { return c.textContent; }).join(" ");
} });
"""
TEST = """
var table = new El("table"), thead = new El("thead"), tbody = new El("tbody"), hr = new El("tr");
HEAD.forEach(function (h) { var th = new El("th"); th.text = h; hr.children.push(th); });
thead.children.push(hr);
BODY.forEach(function (r) {
  var tr = new El("tr"); r.forEach(function (c) { var td = new El("td"); td.text = c; tr.children.push(td); });
  tbody.children.push(tr);
});
table.tHead = thead; table.tBodies = [tbody];
var filterBox = new El("input"); filterBox.value = "";
var document = { getElementById: function (id) {
  return id === "trials" ? table : id === "trials-filter" ? filterBox : null;
} };
"""
CHECK = """
function column(name) {
  var i = HEAD.indexOf(name); return tbody.children.map(function (r) { return r.children[i].text; });
}
var th = hr.children[HEAD.indexOf("test_accuracy")];
th.handlers.click(); var asc = column("test_accuracy");
th.handlers.click(); var desc = column("test_accuracy");
hr.children[HEAD.indexOf("mechanism")].handlers.click(); var mech = column("mechanism");
filterBox.value = "FAILED"; filterBox.handlers.input();
var visible = tbody.children.filter(function (r) { return r.style.display !== "none"; }).length;
console.log(JSON.stringify({ asc: asc, desc: desc, mech_sorted: mech, visible_failed: visible }));
"""
