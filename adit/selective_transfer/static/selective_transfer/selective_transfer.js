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
      const message = { action: action, selected_studies: [], selected_series: [], deid_options: [] };
      for (const [key, value] of data.entries()) {
        if (key === "csrfmiddlewaretoken" || key === "action") continue;
        if (Array.isArray(message[key])) message[key].push(value);
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

    function studyRows() {
      return Array.from(tbody.querySelectorAll("tr[data-key]"));
    }

    // A study's series row (when expanded) stays right below the study, whatever the order.
    function reattachSeries() {
      for (const row of studyRows()) {
        const series = tbody.querySelector('tr[data-series-for="' + CSS.escape(row.dataset.key) + '"]');
        if (series && row.nextElementSibling !== series) row.after(series);
      }
    }

    function insertRows(html) {
      const template = document.createElement("template");
      template.innerHTML = html.trim();
      const existing = studyRows();
      for (const row of Array.from(template.content.querySelectorAll("tr"))) {
        if (tbody.querySelector('tr[data-key="' + CSS.escape(row.dataset.key) + '"]')) continue;
        const before = existing.find(function (other) { return compare(row, other) < 0; });
        tbody.insertBefore(row, before || null);
        existing.splice(before ? existing.indexOf(before) : existing.length, 0, row);
      }
      reattachSeries();
      results.hidden = tbody.rows.length === 0;
      updateSelection();
    }

    function sortTable() {
      const rows = studyRows().sort(compare);
      for (const row of rows) tbody.appendChild(row);
      reattachSeries();
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

    tbody.addEventListener("change", function (event) {
      const box = event.target;
      if (box.name === "selected_series") {
        // Picking a series selects its study (transferred with the picked series only).
        const row = box.closest("tr[data-series-for]");
        const study = row && tbody.querySelector('tr[data-key="' + CSS.escape(row.dataset.seriesFor) + '"] input[name=selected_studies]');
        if (study && box.checked) {
          if (study.disabled) box.checked = false;
          else study.checked = true;
        }
      } else if (box.name === "selected_studies" && !box.checked) {
        const series = tbody.querySelector('tr[data-series-for="' + CSS.escape(box.value) + '"]');
        if (series) for (const other of series.querySelectorAll("input[name=selected_series]")) other.checked = false;
      }
      updateSelection();
    });

    // --- expand a study: its series, to pick some ---------------------------------------

    tbody.addEventListener("click", function (event) {
      const toggle = event.target.closest(".st-series-toggle");
      if (!toggle) return;
      const row = toggle.closest("tr[data-key]");
      const icon = toggle.querySelector("i.bi");
      let series = tbody.querySelector('tr[data-series-for="' + CSS.escape(row.dataset.key) + '"]');
      const expand = toggle.getAttribute("aria-expanded") !== "true";
      toggle.setAttribute("aria-expanded", expand ? "true" : "false");
      if (icon) icon.className = "bi " + (expand ? "bi-chevron-down" : "bi-chevron-right");
      if (series) {
        series.hidden = !expand;
        return;
      }
      series = document.createElement("tr");
      series.className = "st-series-row";
      series.dataset.seriesFor = row.dataset.key;
      const cell = document.createElement("td");
      cell.colSpan = row.children.length;
      cell.className = "ps-4 bg-body-tertiary";
      cell.innerHTML = '<span class="spinner-border spinner-border-sm text-primary" role="status"></span> <span class="small">Loading the series…</span>';
      series.appendChild(cell);
      row.after(series);
      fetch(toggle.dataset.url, { credentials: "same-origin" })
        .then(function (response) {
          // 400 carries the fragment with the reason; other refusals are whole pages.
          if (!response.ok && response.status !== 400) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) { cell.innerHTML = html; })  // server-rendered, escaped
        .catch(function (error) {
          cell.textContent = "The series could not be loaded (" + error.message + ").";
        });
    });
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
