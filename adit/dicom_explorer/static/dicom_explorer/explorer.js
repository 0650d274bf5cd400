// The explorer's small helpers: sortable tables and "copy UID" buttons.
(function () {
  "use strict";

  function sortValue(row, col) {
    const cell = row.children[col];
    return cell ? cell.dataset.sort || cell.textContent.trim() : "";
  }

  function makeSortable(table) {
    let state = { col: -1, descending: false };
    table.querySelectorAll("thead th").forEach(function (th, col) {
      th.addEventListener("click", function () {
        state = { col: col, descending: state.col === col ? !state.descending : false };
        const body = table.tBodies[0];
        const rows = Array.from(body.rows);
        rows.sort(function (a, b) {
          const x = sortValue(a, col), y = sortValue(b, col);
          const order = x.localeCompare(y, undefined, { numeric: true });
          return state.descending ? -order : order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
        table.querySelectorAll("thead th").forEach(function (other) {
          other.removeAttribute("aria-sort");
        });
        th.setAttribute("aria-sort", state.descending ? "descending" : "ascending");
      });
    });
  }

  function copy(button) {
    const text = button.dataset.copy;
    const done = function () {
      const icon = button.querySelector("i");
      if (icon) {
        icon.className = "bi bi-clipboard-check";
        setTimeout(function () { icon.className = "bi bi-clipboard"; }, 1500);
      }
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else {
      // Plain HTTP (no Clipboard API): select the text so that Ctrl-C copies it.
      const span = button.previousElementSibling;
      if (span) {
        const range = document.createRange();
        range.selectNodeContents(span);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        document.execCommand("copy");
        done();
      }
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table[data-sortable]").forEach(makeSortable);
    document.addEventListener("click", function (event) {
      const button = event.target.closest(".ex-copy");
      if (button) copy(button);
    });
  });
})();
