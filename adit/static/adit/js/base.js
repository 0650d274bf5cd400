/* Behaviour every ADIT page shares: theme toggle, toasts, HTMX error notices. */
(function () {
  "use strict";

  var TOAST_LEVELS = ["success", "info", "warning", "error"];

  function themeStorageKey() {
    return document.body.dataset.themeStorageKey || "adit-theme";
  }

  function currentTheme() {
    return document.documentElement.getAttribute("data-bs-theme") === "dark" ? "dark" : "light";
  }

  function setTheme(theme) {
    document.documentElement.setAttribute("data-bs-theme", theme);
    try {
      localStorage.setItem(themeStorageKey(), theme);
    } catch (e) {
      /* Private mode without storage: the choice lasts for this page only. */
    }
  }

  /**
   * Show a toast. Usable from any page script: `window.adit.showToast("Saved", "success")`.
   * The message is inserted as text, never as HTML.
   */
  function showToast(message, level, title) {
    if (TOAST_LEVELS.indexOf(level) < 0) level = "info";
    var template = document.getElementById("toast-template-" + level);
    var container = document.getElementById("toast-container");
    if (!template || !container) return;
    var toast = template.content.firstElementChild.cloneNode(true);
    toast.querySelector(".toast-body").textContent = message;
    if (title) toast.querySelector(".toast-title").textContent = title;
    container.appendChild(toast);
    toast.addEventListener("hidden.bs.toast", function () {
      toast.remove();
    });
    bootstrap.Toast.getOrCreateInstance(toast).show();
  }

  window.adit = window.adit || {};
  window.adit.showToast = showToast;

  document.addEventListener("DOMContentLoaded", function () {
    var toggle = document.getElementById("theme-toggle");
    if (toggle) {
      toggle.addEventListener("click", function () {
        setTheme(currentTheme() === "dark" ? "light" : "dark");
      });
    }

    document.querySelectorAll("#toast-container .toast").forEach(function (toast) {
      bootstrap.Toast.getOrCreateInstance(toast).show();
    });

    // A response header `HX-Trigger: {"adit:toast": {...}}` (adit.core.toasts.add_toast).
    document.body.addEventListener("adit:toast", function (event) {
      var detail = event.detail || {};
      showToast(detail.message || "", detail.level || "info", detail.title || "");
    });

    // One-line explanations of buttons (title attribute; the native tooltip without Bootstrap).
    document.querySelectorAll('[data-bs-toggle="tooltip"]').forEach(function (element) {
      // Hover only: a tap or the focus a confirmation dialog gives back must not leave it open.
      bootstrap.Tooltip.getOrCreateInstance(element, { trigger: "hover" });
    });

    // Forms with data-confirm ask in #confirm-modal before they are sent (core/_action_button).
    var modal = document.getElementById("confirm-modal");
    if (modal) {
      var pending = null;
      var yes = document.getElementById("confirm-modal-yes");
      document.querySelectorAll("form[data-confirm]").forEach(function (form) {
        form.addEventListener("submit", function (event) {
          if (form.dataset.confirmed === "yes") return;
          event.preventDefault();
          pending = form;
          document.getElementById("confirm-modal-body").textContent = form.dataset.confirm;
          yes.textContent = "Yes, " + (form.dataset.confirmLabel || "go on").toLowerCase();
          yes.className = "btn btn-" + (form.dataset.confirmStyle || "primary");
          document.querySelectorAll('[data-bs-toggle="tooltip"]').forEach(function (element) {
            bootstrap.Tooltip.getOrCreateInstance(element).hide();
          });
          bootstrap.Modal.getOrCreateInstance(modal).show();
        });
      });
      yes.addEventListener("click", function () {
        if (!pending) return;
        pending.dataset.confirmed = "yes";
        yes.disabled = true;
        pending.requestSubmit();
      });
    }

    // HTMX does not swap error responses; tell the user instead of doing nothing.
    document.body.addEventListener("htmx:responseError", function (event) {
      var xhr = event.detail.xhr;
      if (xhr.getResponseHeader("HX-Trigger") || xhr.getResponseHeader("HX-Refresh")) return;
      var reason = xhr.status === 403 ? "You are not allowed to do this." : "The server answered " + xhr.status + " " + xhr.statusText + ".";
      showToast(reason, "error", "Request failed");
    });
    document.body.addEventListener("htmx:sendError", function () {
      showToast("The server could not be reached. Check your connection and try again.", "error", "Request failed");
    });
  });
})();
