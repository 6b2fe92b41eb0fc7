/* Diagrams on the designer's upload report and version pages (progressive enhancement).
 *
 * Each .designer-diagram box draws the BPMN held in the textarea named by its data-source, with the
 * bpmn-js viewer (web/static/vendor/, built by `make install`), and marks the elements listed in
 * data-errors / data-warnings with the CSS classes designer-error / designer-warning (designer.css).
 * Without the viewer, or when the file cannot be drawn, the box stays hidden: the report lists the
 * problems with file, line and element anyway.
 */
(function () {
  "use strict";
  if (typeof window.BpmnJS !== "function") {
    return;
  }

  function ids(box, name) {
    return (box.getAttribute("data-" + name) || "").split(/\s+/).filter(Boolean);
  }

  function draw(box) {
    var source = document.getElementById(box.getAttribute("data-source"));
    if (!source || !source.value) {
      return;
    }
    box.hidden = false;
    var viewer = new window.BpmnJS({ container: box });
    viewer.importXML(source.value).then(function () {
      var canvas = viewer.get("canvas");
      var registry = viewer.get("elementRegistry");
      ids(box, "warnings").forEach(function (id) {
        if (registry.get(id)) { canvas.addMarker(id, "designer-warning"); }
      });
      ids(box, "errors").forEach(function (id) {
        if (registry.get(id)) { canvas.addMarker(id, "designer-error"); }
      });
      function fit() {
        // a box without size (page leaving, screenshot resizing) would give a non-finite zoom
        if (box.clientWidth > 0 && box.clientHeight > 0) {
          canvas.resized();
          canvas.zoom("fit-viewport", "auto");
        }
      }
      fit();
      box.classList.add("diagram-ready");
      window.addEventListener("resize", fit);
    }).catch(function () {
      box.hidden = true;
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll(".designer-diagram"), draw);
})();
