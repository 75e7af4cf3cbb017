// hookbay console, mapping editor: the preview follows the draft as it is typed (the Preview
// button stays for use without script). The server renders the preview; this swaps in its
// #preview and #draft-status parts, parsed with DOMParser (no inline script runs, no innerHTML).
"use strict";

function startMappingPreview(form) {
  var timer = null;
  var seq = 0;
  var swap = function (doc, id) {
    var now = document.getElementById(id);
    var fresh = doc.getElementById(id);
    if (now && fresh) now.replaceWith(document.importNode(fresh, true));
  };
  var run = function () {
    var mine = ++seq;
    var data = new URLSearchParams(new FormData(form));
    data.set("action", "preview");
    fetch(form.getAttribute("action"), { method: "POST", body: data, credentials: "same-origin", cache: "no-store" })
      .then(function (resp) { return resp.text(); })
      .then(function (html) {
        if (mine !== seq) return;  // a newer draft is on its way
        var doc = new DOMParser().parseFromString(html, "text/html");
        swap(doc, "preview");
        swap(doc, "draft-status");
      })
      .catch(function () { /* the Preview button still works */ });
  };
  form.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(run, 600);
  });
}

document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("mapping-form");
  if (form) startMappingPreview(form);
});
