// Admin page of a DICOM server: "Test connection" checks the saved server and shows the result
// next to the button (no page reload; the result is text, never markup).
(function () {
  "use strict";

  function init() {
    const button = document.getElementById("test-connection-button");
    const output = document.getElementById("test-connection-result");
    if (!button || !output) return;
    const token = document.querySelector("input[name=csrfmiddlewaretoken]");
    button.addEventListener("click", function () {
      button.disabled = true;
      output.className = "test-connection-result running";
      output.textContent = "Testing…";
      fetch(button.dataset.url, {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRFToken": token ? token.value : "" },
      })
        .then(function (response) {
          return response.json().catch(function () {
            return { ok: false, summary: "ADIT answered HTTP " + response.status + "." };
          });
        })
        .then(function (result) {
          output.className = "test-connection-result " + (result.ok ? "ok" : "failed");
          output.textContent = (result.ok ? "✔ " : "✖ ") + result.summary;
        })
        .catch(function () {
          output.className = "test-connection-result failed";
          output.textContent = "✖ ADIT could not be reached.";
        })
        .finally(function () {
          button.disabled = false;
        });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
