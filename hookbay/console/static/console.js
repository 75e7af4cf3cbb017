// hookbay console: copy buttons, auto-submitting filters, confirmations and the live request tail.
// Loaded as a file (the CSP allows no inline script); builds table rows with textContent only.
"use strict";

function copyText(button) {
  var field = document.getElementById(button.getAttribute("data-copy"));
  if (!field) return;
  var text = field.value !== undefined ? field.value : field.textContent;
  var done = function () {
    var old = button.textContent;
    button.textContent = "Copied";
    setTimeout(function () { button.textContent = old; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, function () { field.select(); });
  } else {
    field.select();
    try { if (document.execCommand("copy")) done(); } catch (e) { /* the text stays selected */ }
  }
}

function badge(value) {
  var span = document.createElement("span");
  span.className = "badge b-" + value;
  span.textContent = value;
  return span;
}

function cell(content, className) {
  var td = document.createElement("td");
  if (className) td.className = className;
  if (content instanceof Node) td.appendChild(content); else td.textContent = content;
  return td;
}

function requestRow(item, fresh) {
  var tr = document.createElement("tr");
  tr.setAttribute("data-id", item.id);
  if (fresh) tr.className = "fresh";
  var link = document.createElement("a");
  link.href = item.url;
  link.textContent = item.received;
  tr.appendChild(cell(link, "nowrap"));
  tr.appendChild(cell(item.source));
  tr.appendChild(cell(item.method));
  tr.appendChild(cell(badge(item.verdict)));
  tr.appendChild(cell(badge(item.state)));
  tr.appendChild(cell(String(item.status)));
  tr.appendChild(cell(item.rule));
  tr.appendChild(cell(String(item.body_size), "num"));
  return tr;
}

function startTail(table) {
  var url = table.getAttribute("data-poll-url");
  var status = document.getElementById("live-status");
  var body = table.tBodies[0];
  var busy = false;
  var poll = function () {
    if (busy || document.hidden) return;
    busy = true;
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" }, cache: "no-store" })
      .then(function (resp) {
        if (resp.status === 401) { window.location.assign("/ui/login?next=" + encodeURIComponent(window.location.pathname + window.location.search)); return null; }
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        return resp.json();
      })
      .then(function (data) {
        if (!data) return;
        var seen = {};
        Array.prototype.forEach.call(body.rows, function (r) { seen[r.getAttribute("data-id")] = true; });
        var rows = document.createDocumentFragment();
        data.items.forEach(function (item) { rows.appendChild(requestRow(item, !seen[item.id])); });
        body.replaceChildren(rows);
        var empty = document.getElementById("empty");
        if (empty) empty.hidden = data.items.length > 0;
        if (status) { status.textContent = "live"; status.classList.remove("stale"); status.title = "updated " + data.at; }
      })
      .catch(function () { if (status) { status.textContent = "reconnecting"; status.classList.add("stale"); } })
      .finally(function () { busy = false; });
  };
  setInterval(poll, 1500);
}

document.addEventListener("DOMContentLoaded", function () {
  // A page answering a POST (a new secret shown once, a replay) takes its GET address in the
  // history, so reloading it shows the page again instead of posting the form a second time.
  var canonical = document.body.getAttribute("data-canonical");
  if (canonical && window.history.replaceState) window.history.replaceState(null, "", canonical);
  document.querySelectorAll("button[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () { copyText(b); });
  });
  document.querySelectorAll("form[data-autosubmit] select").forEach(function (s) {
    s.addEventListener("change", function () { s.form.submit(); });
  });
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (ev) {
      if (!window.confirm(f.getAttribute("data-confirm"))) ev.preventDefault();
    });
  });
  // a bulk run's next chunk: submitted at once, so the progress page follows itself to the end
  var next = document.querySelector("form[data-continue]");
  if (next) setTimeout(function () { next.submit(); }, 50);
  var tail = document.querySelector("table[data-poll-url]");
  if (tail) startTail(tail);
});
