// The `dirtymnist serve` page: uploads PNGs (or picks data-folder images), shows each run's
// 26 probabilities against its thresholds, the decided letters and a letter's heat map.
"use strict";

var INFO = null;
var LETTERS = "abcdefghijklmnopqrstuvwxyz";
var shown = [];   // results on the page, in order: the server's JSON per image
var errors = [];  // script errors and failed requests, for the page check

window.addEventListener("error", function (e) {
  errors.push(e.message || ("failed to load " + ((e.target && e.target.tagName) || "resource")));
  pageCheck();
}, true);
window.addEventListener("unhandledrejection", function (e) {
  errors.push(String(e.reason));
  pageCheck();
});

function el(tag, cls, text) {
  var node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function lettersOf(row) {
  var out = "";
  for (var j = 0; j < LETTERS.length; j++) if (row[j]) out += LETTERS[j];
  return out;
}

function message(text) {
  var box = el("div", "message", text);
  document.getElementById("messages").appendChild(box);
}

function setPending(delta) {
  var status = document.getElementById("status");
  var n = Number(status.getAttribute("data-pending")) + delta;
  status.setAttribute("data-pending", n);
  status.textContent = n ? "working on " + n + " image(s)..." : "";
  if (!n) pageCheck();
}

// Counts images loaded / broken and errors into the hidden #pagecheck's attributes (the
// browser test reads them; users never see them).
function pageCheck() {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;
  var node = document.getElementById("pagecheck");
  node.setAttribute("data-images", imgs.length);
  node.setAttribute("data-loaded", ok);
  node.setAttribute("data-errors", errors.length);
  node.setAttribute("data-messages", errors.join(" | "));
}

// Paint letter j's heat map (26 x h x w bytes) into the canvas; null heat = clear.
function paintHeat(canvas, heat, j) {
  var ctx = canvas.getContext("2d");
  if (!heat) { ctx.clearRect(0, 0, canvas.width, canvas.height); return; }
  canvas.width = heat.w; canvas.height = heat.h;
  var img = ctx.createImageData(heat.w, heat.h), n = heat.w * heat.h, off = j * n;
  for (var k = 0; k < n; k++) {
    var v = heat.bytes[off + k];
    img.data[4 * k] = 255; img.data[4 * k + 1] = 40; img.data[4 * k + 2] = 0;
    img.data[4 * k + 3] = Math.round(v * v / 255 * 0.85);  // opacity p^2: faint cells fade out
  }
  ctx.putImageData(img, 0, 0);  // CSS scales the h x w canvas up to the image, smoothed
}

function decodeHeat(heat) {
  if (!heat) return null;
  var raw = atob(heat.data), bytes = new Uint8Array(raw.length);
  for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return {h: heat.h, w: heat.w, bytes: bytes};
}

function select(card, j) {
  card.querySelectorAll(".chip").forEach(function (c) {
    c.classList.toggle("sel", Number(c.getAttribute("data-j")) === j);
  });
  card.querySelectorAll(".col").forEach(function (col) {
    paintHeat(col.querySelector("canvas"), col._heat, j);
    var note = col.querySelector(".heat-note");
    var p = col._probs[j];
    note.textContent = col._heat ? "heat map of '" + LETTERS[j] + "' (p = " + p.toFixed(3) + ")"
      : "no heat map for this model (no per-letter class maps: head timm)";
  });
  card.setAttribute("data-selected", LETTERS[j]);
}

function addResult(result, src) {
  shown.push(result);
  var card = el("div", "card");
  card.setAttribute("data-name", result.name);
  var head = el("div", "card-head");
  head.appendChild(el("b", "", result.name));
  if (result.truth) {
    head.appendChild(el("span", "", "  true letters: "));
    head.appendChild(el("span", "truth", lettersOf(result.truth)));
  } else {
    head.appendChild(el("span", "muted", "  (true letters unknown: not an image of the data folder)"));
  }
  card.appendChild(head);
  var cols = el("div", "cols");
  var first = result.runs[0].probs, top = first.indexOf(Math.max.apply(null, first));
  result.runs.forEach(function (r, k) {
    var info = INFO.runs[k], col = el("div", "col");
    col.setAttribute("data-run", k);
    col._heat = decodeHeat(r.heat);
    col._probs = r.probs;
    col.appendChild(el("div", "run-name", info.name + (info.tta !== "none" ? " (TTA " + info.tta + ")" : "")));
    var view = el("div", "view"), img = el("img");
    img.alt = result.name;
    img.addEventListener("load", pageCheck);
    img.src = src;
    view.appendChild(img);
    view.appendChild(el("canvas"));
    col.appendChild(view);
    var side = el("div", "side");
    var line = el("div", "letters-line", "letters: ");
    var letters = el("span", "letters", lettersOf(r.pred) || "(none)");
    letters.setAttribute("data-letters", lettersOf(r.pred));
    line.appendChild(letters);
    if (result.truth) {
      var right = 0;
      for (var t = 0; t < LETTERS.length; t++) if (!r.pred[t] === !result.truth[t]) right++;
      line.appendChild(el("span", "score", right + "/" + LETTERS.length + " letters right"));
    }
    side.appendChild(line);
    var chips = el("div", "chips");
    for (var j = 0; j < LETTERS.length; j++) {
      var chip = el("button", "chip", LETTERS[j]);
      chip.type = "button";
      chip.setAttribute("data-j", j);
      chip.appendChild(el("span", "p", r.probs[j].toFixed(2)));
      var pbar = el("span", "pbar");
      pbar.style.width = (100 * r.probs[j]).toFixed(1) + "%";
      chip.appendChild(pbar);
      chip.title = LETTERS[j] + ": p = " + r.probs[j].toFixed(3) + ", threshold " + info.thresholds[j];
      if (r.pred[j]) chip.classList.add("on");
      if (result.truth && r.pred[j] && !result.truth[j]) chip.classList.add("halluc");
      if (result.truth && !r.pred[j] && result.truth[j]) chip.classList.add("missed");
      chip.addEventListener("click", (function (jj) { return function () { select(card, jj); }; })(j));
      chips.appendChild(chip);
    }
    side.appendChild(chips);
    side.appendChild(el("div", "heat-note"));
    col.appendChild(side);
    cols.appendChild(col);
  });
  card.appendChild(cols);
  document.getElementById("empty").hidden = true;
  document.getElementById("results").appendChild(card);
  select(card, top);
}

async function getJSON(resp, what) {
  var body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) throw new Error((body && body.error) || (what + ": HTTP " + resp.status));
  return body;
}

async function upload(file) {
  if (file.size > INFO.max_upload_bytes) {
    message(file.name + ": " + (file.size / 1048576).toFixed(1) + " MB, more than " +
            (INFO.max_upload_bytes / 1048576) + " MB; not uploaded");
    return;
  }
  setPending(1);
  try {
    var resp = await fetch("/api/predict?name=" + encodeURIComponent(file.name),
                           {method: "POST", body: file, headers: {"Content-Type": "application/octet-stream"}});
    addResult(await getJSON(resp, file.name), URL.createObjectURL(file));
  } catch (e) {
    message(e.message);
  } finally {
    setPending(-1);
  }
}

async function uploadAll(files) {
  for (var i = 0; i < files.length; i++) await upload(files[i]);  // in order, one at a time
}

async function showData() {
  var split = document.getElementById("split").value;
  var offset = Number(document.getElementById("offset").value) || 0;
  var count = Number(document.getElementById("count").value) || 1;
  await showImages(split, offset, count);
}

async function showImages(split, offset, count) {
  setPending(1);
  try {
    var list = await getJSON(await fetch("/api/data/" + split + "?offset=" + offset + "&limit=" + count), split);
    for (var i = 0; i < list.index.length; i++) {
      var idx = list.index[i];
      setPending(1);
      try {
        var result = await getJSON(await fetch("/api/data/" + split + "/" + idx), split + " " + idx);
        addResult(result, "/data/" + split + "/" + idx + ".png");
      } catch (e) { message(e.message); } finally { setPending(-1); }
    }
  } catch (e) {
    message(e.message);
  } finally {
    setPending(-1);
  }
}

async function downloadCsv() {
  var k = Number(document.getElementById("csvrun").value) || 0;
  var rows = shown.filter(function (r) { return r.index !== null; });
  var note = document.getElementById("csvnote");
  note.textContent = (shown.length - rows.length) ? (shown.length - rows.length) +
    " image(s) without a competition index in their name left out" : "";
  try {
    var resp = await fetch("/api/csv", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({index: rows.map(function (r) { return r.index; }),
                            pred: rows.map(function (r) { return r.runs[k].pred; })})});
    if (!resp.ok) { await getJSON(resp, "CSV"); return; }
    var link = el("a");
    link.href = URL.createObjectURL(await resp.blob());
    link.download = "predictions.csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
  } catch (e) {
    message(e.message);
  }
}

async function init() {
  INFO = await getJSON(await fetch("/api/info"), "info");
  LETTERS = INFO.letters;
  document.getElementById("runs").textContent = "Runs: " + INFO.runs.map(function (r) {
    return r.name + " (" + r.members.length + " model(s)" + (r.tta !== "none" ? ", TTA " + r.tta : "") + ")";
  }).join("  |  ");
  var rule = document.getElementById("rule");
  rule.appendChild(document.createTextNode("Letters decided as dirtymnist predict decides them: "));
  rule.appendChild(el("b", "", INFO.rule));
  rule.appendChild(el("span", "muted", " (serve --thresholds SPEC changes it, as predict --thresholds does)"));
  document.getElementById("curl").textContent = "curl -F file=@50000.png " + location.origin + "/api/predict";
  var csvrun = document.getElementById("csvrun");
  INFO.runs.forEach(function (r, k) { var o = el("option", "", r.name); o.value = k; csvrun.appendChild(o); });
  if (INFO.data) {
    document.getElementById("datapick").hidden = false;
    document.getElementById("dataroot").textContent = INFO.data.root;
    var split = document.getElementById("split");
    Object.keys(INFO.data.splits).forEach(function (s) {
      var d = INFO.data.splits[s];
      var o = el("option", "", s + " (" + d.images + (d.labelled ? ", letters known)" : ")"));
      o.value = s; split.appendChild(o);
    });
  } else {
    document.getElementById("empty").hidden = false;
  }
  var input = document.getElementById("files"), drop = document.getElementById("drop");
  input.addEventListener("change", function () { uploadAll(Array.from(input.files)); input.value = ""; });
  drop.addEventListener("dragover", function (e) { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", function () { drop.classList.remove("over"); });
  drop.addEventListener("drop", function (e) {
    e.preventDefault(); drop.classList.remove("over");
    uploadAll(Array.from(e.dataTransfer.files));
  });
  document.getElementById("showdata").addEventListener("click", showData);
  document.getElementById("csv").addEventListener("click", downloadCsv);
  document.getElementById("clear").addEventListener("click", function () {
    shown = []; document.getElementById("results").textContent = "";
    document.getElementById("messages").textContent = "";
    document.getElementById("empty").hidden = false;
  });
  document.body.setAttribute("data-ready", "1");
  pageCheck();
  if (INFO.data) {  // a first screen to look at
    var first = firstSplit(INFO.data.splits);
    document.getElementById("split").value = first;
    await showImages(first, 0, 3);
  }
}

// The split the first screen shows: test when its letters are known (test_answer.csv), else train.
function firstSplit(splits) {
  if (splits.test && splits.test.labelled) return "test";
  return splits.train ? "train" : Object.keys(splits)[0];
}

document.addEventListener("DOMContentLoaded", function () {
  init().catch(function (e) { message("cannot start: " + e.message); errors.push(String(e)); pageCheck(); });
});
