"""The report page's style and script, inline so the page stays one self-contained file.

:data:`STYLE` keeps the page inside a 1,400-pixel-wide window: the text column is at most 75em,
long words and run ids wrap, images shrink to the column, and every table sits in a
``div.scroll`` that scrolls sideways on its own (the trials table, ``#trials-scroll``, also
downwards) instead of widening the page. :data:`TABLE_SCRIPT` sorts the trials table on a click
on a column header and filters it by the text typed into ``#trials-filter``.
"""

STYLE = """<style>
body{font-family:sans-serif;margin:2em auto;padding:0 1em;max-width:75em;overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:.85em}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right;overflow-wrap:normal}
th{position:sticky;top:0;background:#f4f4f4}
#privacy td{white-space:nowrap}
#privacy td.wrap{white-space:normal;text-align:left;min-width:18em}
.scroll{max-width:100%;overflow-x:auto;margin-bottom:1em}
#trials-scroll{max-height:40em;overflow:auto}
figure{display:inline-block;vertical-align:top;margin:.5em;width:36em;max-width:100%}
img{max-width:min(36em,100%);height:auto}
.warning{background:#fff3cd;border:1px solid #e0b000;padding:.5em}
</style>"""

#: Sorting (click a column header) and filtering of the trials table, inline so the page stays one file.
TABLE_SCRIPT = """<script>
(function () {
  var table = document.getElementById("trials");
  if (!table) return;
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  function key(row, i) {
    var t = row.cells[i].textContent.trim();
    if (t === "") return null;
    var n = Number(t);
    return isNaN(n) ? t.toLowerCase() : n;
  }
  function compare(x, y) {
    if (x === null || y === null) return x === y ? 0 : (x === null ? 1 : -1);
    if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;
    return x < y ? -1 : x > y ? 1 : 0;
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
    th.style.cursor = "pointer";
    th.title = "sort";
    th.addEventListener("click", function () {
      var up = th.getAttribute("data-sort") !== "asc";
      rows.sort(function (a, b) {
        var x = key(a, i), y = key(b, i);
        if (x === null || y === null) return compare(x, y);  // empty cells last either way
        return compare(x, y) * (up ? 1 : -1);
      });
      th.setAttribute("data-sort", up ? "asc" : "desc");
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  var filter = document.getElementById("trials-filter");
  filter.addEventListener("input", function () {
    var q = filter.value.toLowerCase();
    rows.forEach(function (r) { r.style.display = r.textContent.toLowerCase().indexOf(q) < 0 ? "none" : ""; });
  });
})();
</script>"""
