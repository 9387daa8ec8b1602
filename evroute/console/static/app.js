// evroute console: live sections over server-sent events, and forms that post JSON with the CSRF value.
(function () {
  "use strict";
  var csrfMeta = document.querySelector("meta[name=csrf]");
  var csrf = csrfMeta ? csrfMeta.content : "";
  var live = document.getElementById("live");
  var main = document.querySelector("main[data-stream]");
  if (main) {
    var source = new EventSource(main.getAttribute("data-stream"));
    source.onopen = function () { if (live) { live.textContent = "live"; live.className = "live on"; } };
    source.onerror = function () { if (live) { live.textContent = "reconnecting"; live.className = "live"; } };
    source.onmessage = function (message) {
      var sections = JSON.parse(message.data);
      Object.keys(sections).forEach(function (id) {
        var el = document.getElementById(id);
        if (!el || el.contains(document.activeElement) && document.activeElement.tagName === "TEXTAREA") { return; }
        // Keep what the user picked (selected rows, opened editors) across the redraw.
        var checked = {}, opened = {};
        el.querySelectorAll("input[type=checkbox]:checked").forEach(function (box) { checked[box.name + "=" + box.value] = true; });
        el.querySelectorAll("details[open]").forEach(function (d) { var row = d.closest("[data-id]"); if (row) { opened[row.getAttribute("data-id")] = true; } });
        el.innerHTML = sections[id];
        el.querySelectorAll("input[type=checkbox]").forEach(function (box) { if (checked[box.name + "=" + box.value]) { box.checked = true; } });
        el.querySelectorAll("details").forEach(function (d) { var row = d.closest("[data-id]"); if (row && opened[row.getAttribute("data-id")]) { d.open = true; } });
      });
      document.body.setAttribute("data-updated", String(Date.now()));
    };
  }

  function fields(form, submitter) {
    var data = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.type === "submit" || el.type === "button") { return; }
      if (el.type === "checkbox") {
        if (el.checked) { (data[el.name] = data[el.name] || []).push(el.value); }
        return;
      }
      data[el.name] = el.value;
    });
    if (submitter && submitter.name) { data[submitter.name] = submitter.value; }
    return data;
  }

  function post(url, data) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(data)
    }).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    });
  }

  function show(form, text, bad) {
    var out = form.querySelector(".result");
    if (out) { out.textContent = text; out.className = bad ? "result bad" : "result ok"; }
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var action = form.getAttribute("data-action");
    if (!action) { return; }
    event.preventDefault();
    var submitter = event.submitter || null;
    var question = (submitter && submitter.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { return; }
    post(action, fields(form, submitter)).then(function (answer) {
      if (!answer.ok) { show(form, answer.body.error || "failed", true); return; }
      var body = answer.body;
      if ("matched" in body) {
        show(form, body.matched ? "matches the route's filter" : "does not match: " + body.failed_filter, !body.matched);
        return;
      }
      show(form, JSON.stringify(body), false);
      if (answer.body.location) { window.location.href = answer.body.location; return; }
      if (form.getAttribute("data-reload")) { window.setTimeout(function () { window.location.reload(); }, 300); }
    }, function () { show(form, "the console did not answer", true); });
  });

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (target.classList.contains("preview")) {
      var form = target.form;
      post(form.getAttribute("data-preview"), fields(form, null)).then(function (answer) {
        if (!answer.ok) { show(form, answer.body.error || "failed", true); return; }
        show(form, "cursor would move to " + answer.body.position + "; " + answer.body.events +
          " event(s) after it would be delivered", false);
      });
    }
    if (target.classList.contains("select-all")) {
      var boxes = target.form.querySelectorAll("input[name=ids]");
      Array.prototype.forEach.call(boxes, function (box) { box.checked = target.checked; });
    }
  });
})();
