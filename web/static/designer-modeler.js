/* The designer's BPMN modeler: bpmn-js Modeler (web/static/vendor/, built by `make install`) plus a
 * small properties panel of our own, and "save as new version".
 *
 * The panel edits what Baton's engine reads (engine/bpmn.py): an element's name; for the process its
 * id (the process key) and name; for a user or manual task camunda:formKey, camunda:assignee,
 * camunda:candidateGroups, camunda:candidateUsers and camunda:dueDate (attributes typed by the
 * camunda-bpmn-moddle descriptor the page embeds); for a timer event its timeDuration / timeDate /
 * timeCycle expression; for a sequence flow its condition; for a script task its Python script
 * (bpmn:script, scriptFormat "python" when none is set); for a call activity calledElement, offering the
 * executable processes of the bundle (a definition loads from its own bundle only, so the server refuses
 * a call to any other process). Every edit goes through bpmn-js's modeling service, so undo/redo
 * (Ctrl+Z in the canvas) covers it.
 *
 * Saving posts the XML with the bundle's other files (forms, decisions: kept in the page as base64,
 * byte for byte) and the CSRF token to data-deploy-url; refused saves come back with problems whose
 * shape_id is marked on the canvas (class designer-error) and listed above it.
 */
(function () {
  "use strict";
  var root = document.getElementById("modeler");
  if (!root) {
    return;
  }
  var statusBox = document.getElementById("modeler-status");
  var problemList = document.getElementById("modeler-problems");
  var panel = document.getElementById("modeler-panel");
  var texts = JSON.parse(document.getElementById("modeler-texts").textContent || "{}");
  var bundleProcesses = JSON.parse(document.getElementById("modeler-bundle-processes").textContent || "[]");

  function say(message, kind) {
    statusBox.textContent = message;
    statusBox.className = "modeler-status " + (kind || "");
    statusBox.hidden = !message;
  }

  function fill(template, values) {
    return String(template).replace(/\{(\w+)\}/g, function (all, name) {
      return values[name] === undefined ? all : values[name];
    });
  }

  if (typeof window.BpmnJS !== "function" || typeof window.fetch !== "function") {
    say(texts.importFailed ? fill(texts.importFailed, { reason: "bpmn-js" }) : "bpmn-js is missing", "error");
    return;
  }

  var descriptor = JSON.parse(document.getElementById("camunda-moddle").textContent || "{}");
  var modeler = new window.BpmnJS({
    container: document.getElementById("modeler-canvas"),
    moddleExtensions: descriptor && descriptor.uri ? { camunda: descriptor } : {}
  });
  var modeling = modeler.get("modeling");
  var moddle = modeler.get("moddle");
  var canvas = modeler.get("canvas");
  var registry = modeler.get("elementRegistry");
  var selection = modeler.get("selection");
  var companions = Array.prototype.map.call(document.querySelectorAll(".modeler-companion"), function (box) {
    return { name: box.getAttribute("data-filename"), content: box.value };
  });
  var filename = root.getAttribute("data-filename") || "";
  var marked = [];
  var current = null; // the element the panel shows (null: the process)

  // -- reading the model ---------------------------------------------------------------------------

  function is(bo, type) {
    return bo && typeof bo.$instanceOf === "function" && bo.$instanceOf(type);
  }

  function processTarget() {
    /* The root process (or the first pool's process) and the diagram element edits attach to. */
    var rootElement = canvas.getRootElement();
    var bo = rootElement.businessObject;
    if (is(bo, "bpmn:Process")) {
      return { element: rootElement, process: bo };
    }
    var pool = registry.filter(function (e) {
      return is(e.businessObject, "bpmn:Participant") && e.businessObject.processRef;
    })[0];
    return pool ? { element: pool, process: pool.businessObject.processRef } : null;
  }

  function timerOf(bo) {
    return (bo.eventDefinitions || []).filter(function (d) { return is(d, "bpmn:TimerEventDefinition"); })[0];
  }

  function expression(value) {
    return value ? moddle.create("bpmn:FormalExpression", { body: value }) : undefined;
  }

  // -- the panel -----------------------------------------------------------------------------------

  function node(tag, attrs, text) {
    var el = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { el.setAttribute(k, attrs[k]); });
    if (text !== undefined) { el.textContent = text; }
    return el;
  }

  function input(key, label, value, apply, options) {
    options = options || {};
    var wrap = node("div", { "class": "panel-field" });
    var id = "mp-" + key;
    wrap.appendChild(node("label", { "for": id }, label));
    var control;
    if (options.choices) {
      control = node("select", { id: id });
      options.choices.forEach(function (choice) {
        var opt = node("option", { value: choice[0] }, choice[1]);
        if (choice[0] === value) { opt.selected = true; }
        control.appendChild(opt);
      });
    } else {
      control = node(options.multiline || options.code ? "textarea" : "input", { id: id });
      if (options.code) {
        // Scripts: monospace, no spelling fixes, lines kept as typed (scroll sideways, not wrapped).
        control.className = "panel-code";
        control.setAttribute("spellcheck", "false");
        control.setAttribute("autocapitalize", "off");
        control.setAttribute("autocomplete", "off");
        control.setAttribute("wrap", "off");
        control.setAttribute("rows", "10");
      } else if (!options.multiline) {
        control.type = "text";
      }
      if (options.list) { control.setAttribute("list", options.list); }
      control.value = value || "";
    }
    if (options.hint) {
      var hint = node("p", { "class": "panel-hint", id: id + "-hint" }, options.hint);
      control.setAttribute("aria-describedby", hint.id);
      wrap.appendChild(control);
      wrap.appendChild(hint);
    } else {
      wrap.appendChild(control);
    }
    var problem = node("p", { "class": "error panel-error", id: id + "-error", role: "alert" });
    // options.problem: what is wrong with the current value (the panel is redrawn after every edit).
    problem.textContent = options.problem || "";
    problem.hidden = !options.problem;
    if (options.problem) { control.setAttribute("aria-invalid", "true"); }
    wrap.appendChild(problem);
    control.addEventListener("change", function () {
      // A script keeps its indentation; only trailing blank space goes.
      var value = options.code ? control.value.replace(/\s+$/, "") : control.value.trim();
      var refused = apply(value);
      problem.textContent = refused || "";
      problem.hidden = !refused;
      control.setAttribute("aria-invalid", refused ? "true" : "false");
    });
    return wrap;
  }

  function processFields(target) {
    var bo = target.process;
    return [
      input("processKey", texts.processKey, bo.id, function (value) {
        if (!/^[A-Za-z_][\w.-]*$/.test(value)) { return texts.processKeyHint; }
        modeling.updateModdleProperties(target.element, bo, { id: value });
        return null;
      }, { hint: texts.processKeyHint }),
      input("processName", texts.name, bo.name, function (value) {
        modeling.updateModdleProperties(target.element, bo, { name: value || undefined });
        return null;
      })
    ];
  }

  function humanTaskFields(element) {
    var bo = element.businessObject;
    function attr(key, name, label, hint, list) {
      return input(key, label, bo.get("camunda:" + name), function (value) {
        var props = {};
        props["camunda:" + name] = value || undefined;
        modeling.updateProperties(element, props);
        return null;
      }, { hint: hint, list: list });
    }
    return [
      attr("formKey", "formKey", texts.form, null, "modeler-forms"),
      attr("assignee", "assignee", texts.assignee, texts.assigneeHint),
      attr("candidateGroups", "candidateGroups", texts.candidateGroups),
      attr("candidateUsers", "candidateUsers", texts.candidateUsers),
      attr("dueDate", "dueDate", texts.dueDate)
    ];
  }

  function scriptFields(element) {
    var bo = element.businessObject;
    return [
      input("script", texts.script, bo.script, function (value) {
        var props = { script: value || undefined };
        if (!bo.scriptFormat) { props.scriptFormat = "python"; }
        modeling.updateProperties(element, props);
        return null;
      }, { code: true, hint: texts.scriptHint })
    ];
  }

  function processOf(bo) {
    var parent = bo;
    while (parent && !is(parent, "bpmn:Process")) {
      parent = is(parent, "bpmn:Participant") ? parent.processRef : parent.$parent;
    }
    return parent;
  }

  function callableProcesses(element) {
    /* [id, name] of the executable processes a call activity may call: the other processes of the
     * modelled file, then those of the bundle's other BPMN files (sent by the server). */
    var own = processOf(element.businessObject);
    var found = [];
    var definitions = modeler.getDefinitions();
    ((definitions && definitions.rootElements) || []).forEach(function (e) {
      if (is(e, "bpmn:Process") && e !== own && e.id && e.isExecutable !== false) {
        found.push([e.id, e.name || ""]);
      }
    });
    bundleProcesses.forEach(function (p) {
      if (!found.some(function (f) { return f[0] === p.id; })) {
        found.push([p.id, p.name ? p.name + " · " + p.file : p.file]);
      }
    });
    return found;
  }

  function callFields(element) {
    var bo = element.businessObject;
    var choices = callableProcesses(element);
    var list = node("datalist", { id: "modeler-processes" });
    choices.forEach(function (c) { list.appendChild(node("option", { value: c[0] }, c[1] || c[0])); });
    var called = bo.calledElement || "";
    var known = choices.some(function (c) { return c[0] === called; });
    return [
      list,
      input("calledElement", texts.calledElement, called, function (value) {
        modeling.updateProperties(element, { calledElement: value || undefined });
        return null;
      }, {
        hint: texts.calledElementHint,
        list: "modeler-processes",
        problem: called && !known ? fill(texts.calledUnknown, { process: called }) : null
      })
    ];
  }

  function timerFields(element, timer) {
    var kinds = ["timeDuration", "timeDate", "timeCycle"];
    var kind = kinds.filter(function (k) { return timer[k]; })[0] || "timeDuration";
    var value = timer[kind] ? timer[kind].body : "";
    function apply(newKind, newValue) {
      var props = { timeDuration: undefined, timeDate: undefined, timeCycle: undefined };
      props[newKind] = expression(newValue);
      modeling.updateModdleProperties(element, timer, props);
    }
    var heading = node("h3", {}, texts.timer);
    return [
      heading,
      input("timerKind", texts.timerKind, kind, function (newKind) {
        apply(newKind, document.getElementById("mp-timerExpression").value.trim());
        return null;
      }, { choices: kinds.map(function (k) { return [k, texts[k]]; }) }),
      input("timerExpression", texts.timerExpression, value, function (newValue) {
        apply(document.getElementById("mp-timerKind").value, newValue);
        return null;
      }, { hint: texts.timerHint })
    ];
  }

  function render() {
    var focused = document.activeElement && panel.contains(document.activeElement) ? document.activeElement.id : null;
    panel.textContent = "";
    var list = node("datalist", { id: "modeler-forms" });
    companions.forEach(function (file) {
      if (/\.json$/i.test(file.name)) { list.appendChild(node("option", { value: file.name })); }
    });
    panel.appendChild(list);
    var element = current && registry.get(current.id) ? current : null;
    var fields = [];
    if (!element || is(element.businessObject, "bpmn:Participant")) {
      var target = processTarget();
      panel.appendChild(node("h2", {}, texts.process));
      if (target) { fields = processFields(target); }
      if (!element) { panel.appendChild(node("p", { "class": "meta" }, texts.nothing)); }
    }
    if (element) {
      var bo = element.businessObject;
      panel.appendChild(node("h2", {}, bo.$type.replace(/^bpmn:/, "")));
      panel.appendChild(node("p", { "class": "meta" }, texts.id + ": " + bo.id));
      if (!is(bo, "bpmn:Participant")) {
        fields.push(input("name", texts.name, bo.name, function (value) {
          modeling.updateLabel(element, value);
          return null;
        }));
      }
      if (is(bo, "bpmn:UserTask") || is(bo, "bpmn:ManualTask")) {
        fields = fields.concat(humanTaskFields(element));
      }
      if (is(bo, "bpmn:ScriptTask")) {
        fields = fields.concat(scriptFields(element));
      }
      if (is(bo, "bpmn:CallActivity")) {
        fields = fields.concat(callFields(element));
      }
      var timer = timerOf(bo);
      if (timer) {
        fields = fields.concat(timerFields(element, timer));
      }
      if (is(bo, "bpmn:SequenceFlow")) {
        fields.push(input("condition", texts.condition,
          bo.conditionExpression ? bo.conditionExpression.body : "", function (value) {
            modeling.updateProperties(element, { conditionExpression: expression(value) });
            return null;
          }, { multiline: true }));
      }
    }
    fields.forEach(function (f) { panel.appendChild(f); });
    if (focused && document.getElementById(focused)) {
      document.getElementById(focused).focus();
    }
  }

  modeler.on("selection.changed", function (event) {
    current = event.newSelection.length === 1 ? event.newSelection[0] : null;
    render();
  });
  modeler.on("elements.changed", function (event) {
    var shown = current ? current.id : null;
    var touched = event.elements.some(function (e) {
      return !shown || e.id === shown || e === canvas.getRootElement();
    });
    if (touched) { render(); }
  });

  // -- problems on the canvas ----------------------------------------------------------------------

  function clearProblems() {
    marked.forEach(function (id) {
      if (registry.get(id)) { canvas.removeMarker(id, "designer-error"); }
    });
    marked = [];
    problemList.textContent = "";
    problemList.hidden = true;
  }

  function showProblems(problems, savedFile) {
    clearProblems();
    problems.forEach(function (p) {
      var item = node("li", { "class": "problem problem-" + p.severity });
      var where = [p.file];
      if (p.line) { where.push(fill(texts.line, { line: p.line })); }
      if (p.element_id) { where.push(p.element_id); }
      var shape = p.file === savedFile && p.shape_id ? registry.get(p.shape_id) : null;
      if (shape && shape.businessObject.name) {
        where.push(shape.businessObject.name); // the element's name too, as the designer knows it
      }
      if (shape) {
        if (p.severity === "error" && marked.indexOf(p.shape_id) < 0) {
          canvas.addMarker(p.shape_id, "designer-error");
          marked.push(p.shape_id);
        }
        var go = node("button", { type: "button", "class": "link" }, where.join(" · "));
        go.addEventListener("click", function () {
          selection.select(shape);
          canvas.scrollToElement(shape);
        });
        item.appendChild(go);
      } else {
        item.appendChild(node("span", { "class": "problem-where" }, where.join(" · ")));
      }
      item.appendChild(document.createTextNode(": " + p.message));
      problemList.appendChild(item);
    });
    problemList.hidden = !problems.length;
  }

  // -- save and download ---------------------------------------------------------------------------

  function save() {
    var button = document.getElementById("modeler-save");
    button.disabled = true;
    say(texts.saving, "");
    modeler.saveXML({ format: true }).then(function (result) {
      var body = new FormData();
      body.append("csrf_token", root.getAttribute("data-csrf"));
      body.append("xml", result.xml);
      body.append("filename", filename);
      companions.forEach(function (file) {
        body.append("companion_name", file.name);
        body.append("companion", file.content);
      });
      return window.fetch(root.getAttribute("data-deploy-url"), {
        method: "POST",
        body: body,
        credentials: "same-origin",
        headers: { "Accept": "application/json", "X-CSRF-Token": root.getAttribute("data-csrf") }
      });
    }).then(function (response) {
      return response.json().then(function (answer) { return { status: response.status, answer: answer }; });
    }).then(function (reply) {
      var answer = reply.answer;
      if (answer.filename) { filename = answer.filename; }
      if (reply.status === 422 && answer.problems) {
        showProblems(answer.problems, answer.filename);
        say(answer.message || texts.refused, "error");
      } else if (reply.status === 201 || reply.status === 200) {
        clearProblems();
        say(fill(reply.status === 201 ? texts.deployed : texts.unchanged, { version: answer.version }), "ok");
        var link = node("a", { href: answer.url, "class": "modeler-version-link" }, texts.openVersion);
        statusBox.appendChild(document.createTextNode(" "));
        statusBox.appendChild(link);
      } else {
        var reason = (answer.error && answer.error.message) || ("HTTP " + reply.status);
        say(fill(texts.failed, { reason: reason }), "error");
      }
    }).catch(function (error) {
      say(fill(texts.failed, { reason: error.message || String(error) }), "error");
    }).then(function () {
      button.disabled = false;
    });
  }

  function download() {
    modeler.saveXML({ format: true }).then(function (result) {
      var blob = new Blob([result.xml], { type: "application/xml" });
      var link = node("a", { href: URL.createObjectURL(blob), download: filename || "process.bpmn" });
      document.body.appendChild(link);
      link.click();
      link.remove();
    });
  }

  document.getElementById("modeler-save").addEventListener("click", save);
  document.getElementById("modeler-download").addEventListener("click", download);

  modeler.importXML(document.getElementById("modeler-xml").value).then(function () {
    var box = document.getElementById("modeler-canvas");
    if (box.clientWidth > 0 && box.clientHeight > 0) {
      canvas.zoom("fit-viewport", "auto");
    }
    var initial = JSON.parse(document.getElementById("modeler-initial-problems").textContent || "[]");
    if (initial.length) {
      showProblems(initial, filename);
    }
    if (initial.some(function (p) { return p.severity === "error"; })) {
      say(texts.refused, "error");
    }
    root.classList.add("modeler-ready");
    render();
  }).catch(function (error) {
    say(fill(texts.importFailed, { reason: error.message || String(error) }), "error");
  });
  window.baton = window.baton || {};
  window.baton.modeler = modeler; // for scripted edits and tests
})();
