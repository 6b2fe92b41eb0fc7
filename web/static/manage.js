/* The instance page's diagram (progressive enhancement; web/templates/manage/instance.html).
 *
 * Without this script or the bpmn-js viewer the page lists the steps with where the instance is.
 * With them, #diagram draws the instance's BPMN (from data-url) and marks its elements with CSS
 * classes (web/static/manage.css): done-step (data-done), current-step (data-current), error-step
 * (data-error) and the sequence flows taken, taken-flow (data-flows). Clicking a step one may move
 * the instance to (data-targets) picks it in the "Move to step" form.
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

  function fit(viewer) {
    if (box.clientWidth > 0 && box.clientHeight > 0) { // zooming a box without size gives NaN
      viewer.get("canvas").zoom("fit-viewport", "auto");
    }
  }

  function mark(viewer) {
    var canvas = viewer.get("canvas");
    var registry = viewer.get("elementRegistry");
    [["done", "done-step"], ["flows", "taken-flow"], ["current", "current-step"], ["error", "error-step"]]
      .forEach(function (pair) {
        ids(pair[0]).forEach(function (id) {
          if (registry.get(id)) { canvas.addMarker(id, pair[1]); }
        });
      });
    fit(viewer);
  }

  function pickable(viewer) {
    var select = document.getElementById("move-target");
    var targets = ids("targets");
    if (!select || !targets.length) { return; }
    var canvas = viewer.get("canvas");
    targets.forEach(function (id) {
      if (viewer.get("elementRegistry").get(id)) { canvas.addMarker(id, "move-target"); }
    });
    viewer.get("eventBus").on("element.click", function (event) {
      var id = event.element && event.element.id;
      if (id && targets.indexOf(id) >= 0) {
        select.value = id;
        select.focus();
      }
    });
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
        pickable(viewer);
        box.classList.add("diagram-ready");
        window.addEventListener("resize", function () {
          viewer.get("canvas").resized();
          fit(viewer);
        });
      });
    })
    .catch(function () {
      box.hidden = true; // the list of steps still says where the instance is
    });
})();
