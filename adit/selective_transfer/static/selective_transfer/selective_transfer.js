// Selective transfer page: sends the form over a WebSocket and inserts the server-rendered
// fragments it answers with. Without a WebSocket the form is simply POSTed (server fallback).
(function () {
  "use strict";

  function init() {
    const form = document.getElementById("st-form");
    if (!form) return;
    const status = document.getElementById("st-status");
    const results = document.getElementById("st-results");
    const tbody = document.getElementById("st-result-rows");
    const jobBox = document.getElementById("st-job");
    const connection = document.getElementById("st-connection");
    const selectionCount = document.getElementById("st-selection-count");
    const maxSelection = parseInt(form.dataset.maxSelection || "", 10) || null;
    let socket = null;
    let sort = { col: 4, descending: true };
    let retryDelay = 1000;

    // --- WebSocket -------------------------------------------------------------------------

    function connect() {
      const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      socket = new WebSocket(scheme + window.location.host + form.dataset.wsPath);
      socket.addEventListener("open", function () {
        form.dataset.ws = "open";
        connection.textContent = "";
        retryDelay = 1000;
      });
      socket.addEventListener("close", function (event) {
        form.dataset.ws = "closed";
        socket = null;
        if (event.code === 4401) {
          connection.textContent = "Your session has ended; please log in again.";
          return;
        }
        // The form still works through plain POSTs while we try to reconnect.
        connection.textContent = "Live connection lost; reconnecting…";
        setTimeout(connect, retryDelay);
        retryDelay = Math.min(retryDelay * 2, 30000);
      });
      socket.addEventListener("message", function (event) {
        handle(JSON.parse(event.data));
      });
    }

    function send(message) {
      socket.send(JSON.stringify(message));
    }

    function formMessage(action) {
      const data = new FormData(form);
      // Lists: every checked value (a checkbox group may also send none).
      const message = { action: action, selected_studies: [], deid_options: [] };
      for (const [key, value] of data.entries()) {
        if (key === "csrfmiddlewaretoken" || key === "action") continue;
        if (key === "selected_studies" || key === "deid_options") message[key].push(value);
        else message[key] = value;
      }
      return message;
    }

    function handle(message) {
      switch (message.type) {
        case "form": {
          const fields = document.getElementById("st-fields");
          fields.outerHTML = message.html;
          updateArchivePassword();
          break;
        }
        case "started":
          status.innerHTML = message.html;
          break;
        case "rows":
          insertRows(message.html);
          break;
        case "done":
        case "error":
        case "canceled":
          status.innerHTML = message.html;
          break;
        case "job":
          status.innerHTML = "";
          jobBox.innerHTML = message.html;
          for (const box of tbody.querySelectorAll("input[type=checkbox]")) box.checked = false;
          updateSelection();
          break;
      }
    }

    form.addEventListener("submit", function (event) {
      if (!socket || socket.readyState !== WebSocket.OPEN) return; // plain POST fallback
      event.preventDefault();
      const action = (event.submitter && event.submitter.value) || "query";
      if (action === "query") {
        tbody.innerHTML = "";
        results.hidden = true;
        jobBox.innerHTML = "";
        status.innerHTML = ""; // no "N studies found." of an earlier query next to new errors
        updateSelection();
      }
      send(formMessage(action));
    });

    status.addEventListener("click", function (event) {
      if (event.target.closest("[data-st-cancel]") && socket) send({ action: "cancel" });
    });

    // --- sortable results (newest first) --------------------------------------------------

    function sortValue(row, col) {
      const cell = row.children[col];
      return cell ? cell.dataset.sort || cell.textContent.trim() : "";
    }

    function compare(a, b) {
      const x = sortValue(a, sort.col), y = sortValue(b, sort.col);
      const order = x.localeCompare(y, undefined, { numeric: true, sensitivity: "base" });
      return sort.descending ? -order : order;
    }

    function insertRows(html) {
      const template = document.createElement("template");
      template.innerHTML = html.trim();
      const existing = Array.from(tbody.rows);
      for (const row of Array.from(template.content.querySelectorAll("tr"))) {
        if (tbody.querySelector('tr[data-key="' + CSS.escape(row.dataset.key) + '"]')) continue;
        const before = existing.find(function (other) { return compare(row, other) < 0; });
        tbody.insertBefore(row, before || null);
        existing.splice(before ? existing.indexOf(before) : existing.length, 0, row);
      }
      results.hidden = tbody.rows.length === 0;
      updateSelection();
    }

    function sortTable() {
      const rows = Array.from(tbody.rows).sort(compare);
      for (const row of rows) tbody.appendChild(row);
      for (const th of results.querySelectorAll("th[data-sort-col]")) {
        const active = parseInt(th.dataset.sortCol, 10) === sort.col;
        th.setAttribute("aria-sort", active ? (sort.descending ? "descending" : "ascending") : "none");
        const icon = th.querySelector("i.bi");
        if (icon) icon.remove();
        if (active) {
          th.insertAdjacentHTML("beforeend", ' <i class="bi bi-sort-' + (sort.descending ? "down" : "up") + '"></i>');
        }
      }
    }

    results.querySelector("thead").addEventListener("click", function (event) {
      const th = event.target.closest("th[data-sort-col]");
      if (!th) return;
      const col = parseInt(th.dataset.sortCol, 10);
      sort = { col: col, descending: sort.col === col ? !sort.descending : col === 4 };
      sortTable();
    });

    // --- selection -------------------------------------------------------------------------

    function updateSelection() {
      const boxes = Array.from(tbody.querySelectorAll("input[name=selected_studies]"));
      const checked = boxes.filter(function (box) { return box.checked; }).length;
      const atLimit = maxSelection !== null && checked >= maxSelection;
      for (const box of boxes) box.disabled = atLimit && !box.checked;
      let text = checked + " selected";
      if (maxSelection !== null) text += " (at most " + maxSelection + " per job)";
      selectionCount.textContent = text;
      document.getElementById("st-transfer-button").disabled = checked === 0;
    }

    tbody.addEventListener("change", updateSelection);
    document.getElementById("st-select-all").addEventListener("change", function (event) {
      let count = 0;
      for (const box of tbody.querySelectorAll("input[name=selected_studies]")) {
        const allowed = maxSelection === null || count < maxSelection;
        box.checked = event.target.checked && allowed;
        if (box.checked) count += 1;
      }
      updateSelection();
    });

    // --- download links carry the current transfer options ---------------------------------

    tbody.addEventListener("click", function (event) {
      const link = event.target.closest("a.st-download");
      if (!link) return;
      const url = new URL(link.href, window.location.href);
      for (const name of ["pseudonym", "trial_protocol_id", "trial_protocol_name"]) {
        const input = form.elements[name];
        if (input && input.value) url.searchParams.set(name, input.value);
        else url.searchParams.delete(name);
      }
      link.href = url.toString();
      // Ask first: a refused download (e.g. a pseudonym is required) is shown above the
      // results instead of navigating away from them to a bare error text.
      event.preventDefault();
      const check = new URL(url);
      check.searchParams.set("check", "1");
      fetch(check, { credentials: "same-origin" })
        .then(function (response) {
          if (response.ok) {
            window.location.assign(url.toString());
            return null;
          }
          return response.text();
        })
        .then(function (text) {
          if (text !== null) showAlert("danger", "Download refused: " + text);
        })
        .catch(function () {
          showAlert("danger", "Download refused: ADIT could not be reached.");
        });
    });

    function showAlert(level, text) {
      const alert = document.createElement("div");
      alert.className = "alert alert-" + level + " py-2 mb-2";
      alert.setAttribute("role", "alert");
      alert.id = "st-alert";
      alert.textContent = text; // text, never markup
      status.replaceChildren(alert);
    }

    // --- archive password only for folder destinations --------------------------------------

    function updateArchivePassword() {
      const fields = document.getElementById("st-fields");
      const group = document.getElementById("st-archive-password-group");
      const destination = form.elements["destination"];
      if (!fields || !group || !destination) return;
      const folders = (fields.dataset.folderIds || "").split(",").filter(Boolean);
      group.hidden = !folders.includes(destination.value);
    }

    form.addEventListener("change", function (event) {
      if (event.target.name === "destination") updateArchivePassword();
    });

    updateArchivePassword();
    updateSelection();
    connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
