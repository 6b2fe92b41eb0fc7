/* The task page's process diagram (progressive enhancement).
 *
 * Without this script, or without the bpmn-js viewer (web/static/vendor/, built by `make install`),
 * the page shows the list of steps with the current one highlighted. With them, #diagram draws the
 * instance's BPMN (fetched from its data-url) and marks the elements listed in data-current and
 * data-done with the CSS classes current-step and done-step (styled in baton.css).
 */
(function () {
  "use strict";
  var box = document.getElementById("diagram");
  if (!box || typeof window.BpmnJS !== "function" || typeof window.fetch !== "function") {
    return;
  }

  function ids(name) {
    return (box.getAttribute("data-" + name) || "").split(/\s+/).filter(Boolean);
  }

  function mark(viewer) {
    var canvas = viewer.get("canvas");
    var registry = viewer.get("elementRegistry");
    ids("done").forEach(function (id) {
      if (registry.get(id)) { canvas.addMarker(id, "done-step"); }
    });
    ids("current").forEach(function (id) {
      if (registry.get(id)) { canvas.addMarker(id, "current-step"); }
    });
    canvas.zoom("fit-viewport", "auto");
  }

  window.fetch(box.getAttribute("data-url"), { credentials: "same-origin" })
    .then(function (response) {
      if (!response.ok) { throw new Error("diagram: HTTP " + response.status); }
      return response.text();
    })
    .then(function (xml) {
      box.hidden = false;
      var viewer = new window.BpmnJS({ container: box });
      return viewer.importXML(xml).then(function () {
        mark(viewer);
        box.classList.add("diagram-ready");
        window.addEventListener("resize", function () {
          viewer.get("canvas").resized();
          viewer.get("canvas").zoom("fit-viewport", "auto");
        });
      });
    })
    .catch(function () {
      box.hidden = true; // the list of steps below still says where the process is
    });
})();
