/* The measures dashboard's heat map (progressive enhancement).
 *
 * Draws the process (fetched from #heatmap's data-url) with the bpmn-js viewer and colours each
 * step listed in #heatmap-data ([{id, level 0-5, label}]) with the CSS class heat-<level>, plus a
 * badge with its average wait and task count. Without this script or the viewer the table below
 * the diagram says the same.
 */
(function () {
  "use strict";
  var box = document.getElementById("heatmap");
  var source = document.getElementById("heatmap-data");
  if (!box || !source || typeof window.BpmnJS !== "function" || typeof window.fetch !== "function") {
    return;
  }
  var steps;
  try {
    steps = JSON.parse(source.textContent || "[]");
  } catch (e) {
    return;
  }

  function paint(viewer) {
    var canvas = viewer.get("canvas");
    var registry = viewer.get("elementRegistry");
    var overlays = viewer.get("overlays");
    steps.forEach(function (step) {
      if (!registry.get(step.id)) { return; }
      canvas.addMarker(step.id, "heat-marker");
      canvas.addMarker(step.id, "heat-" + step.level);
      var badge = document.createElement("div");
      badge.className = "heat-badge";
      badge.textContent = step.label; // text, never markup: names come from BPMN files
      overlays.add(step.id, { position: { top: -22, left: 0 }, html: badge });
    });
    canvas.zoom("fit-viewport", "auto");
  }

  window.fetch(box.getAttribute("data-url"), { credentials: "same-origin" })
    .then(function (response) {
      if (!response.ok) { throw new Error("heatmap: HTTP " + response.status); }
      return response.text();
    })
    .then(function (xml) {
      box.hidden = false;
      var viewer = new window.BpmnJS({ container: box });
      return viewer.importXML(xml).then(function () {
        paint(viewer);
        box.classList.add("diagram-ready");
        window.addEventListener("resize", function () {
          viewer.get("canvas").resized();
          viewer.get("canvas").zoom("fit-viewport", "auto");
        });
      });
    })
    .catch(function () {
      box.hidden = true; // the table below still shows every step
    });
})();
