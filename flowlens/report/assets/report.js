// flowlens interactive report. Reads the JSON in #flowlens-data, draws the chosen map on canvases.
// Every string from the data goes through textContent (never innerHTML).
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("flowlens-data").textContent);

  // ---- float16 decoding ------------------------------------------------------------------
  var HALF = new Float32Array(65536);
  (function () {
    for (var i = 0; i < 65536; i++) {
      var s = i & 0x8000 ? -1 : 1, e = (i >> 10) & 0x1f, f = i & 0x3ff;
      HALF[i] = e === 0 ? s * Math.pow(2, -14) * (f / 1024)
              : e === 31 ? (f ? NaN : s * Infinity)
              : s * Math.pow(2, e - 15) * (1 + f / 1024);
    }
  })();
  var cache = {};
  function bits(fi, m) {  // Uint16Array of a frame's method data
    var key = fi + "/" + m;
    if (!cache[key]) {
      var bin = atob(D.frames[fi].data[m].b64), n = bin.length, buf = new Uint8Array(n);
      for (var i = 0; i < n; i++) buf[i] = bin.charCodeAt(i);
      cache[key] = new Uint16Array(buf.buffer);
    }
    return cache[key];
  }
  function clampIndex(i, size) { return size === 1 ? 0 : Math.min(i, size - 1); }
  function mapBits(fi, m, s, l, h) {  // the displayed vector's uint16 bits [K]
    var d = D.frames[fi].data[m], sh = d.shape, K = sh[3];
    var idx = ((clampIndex(s, sh[0]) * sh[1] + clampIndex(l, sh[1])) * sh[2] + clampIndex(h, sh[2])) * K;
    return bits(fi, m).subarray(idx, idx + K);
  }
  function fnv(u16) {
    var h = 0x811c9dc5;
    for (var i = 0; i < u16.length; i++) {
      h ^= u16[i] & 0xff; h = Math.imul(h, 0x01000193) >>> 0;
      h ^= u16[i] >>> 8; h = Math.imul(h, 0x01000193) >>> 0;
    }
    return h >>> 0;
  }
  function fixedMax(fi, m) {  // max over every map of the image part (for the fixed colour scale)
    var key = "max/" + fi + "/" + m;
    if (cache[key] === undefined) {
      var f = D.frames[fi], b = bits(fi, m), K = f.K, hi = 0;
      for (var j = 0; j < b.length; j += K)
        for (var k = 0; k < f.word_offset; k++) { var v = HALF[b[j + k]]; if (v > hi) hi = v; }
      cache[key] = hi;
    }
    return cache[key];
  }

  // ---- colour -----------------------------------------------------------------------------
  function rgb(lut, t) {
    t = isFinite(t) ? Math.max(0, Math.min(1, t)) : 0;
    var i = Math.round(t * 255) * 3;
    return [lut[i], lut[i + 1], lut[i + 2]];
  }
  function css(c) { return "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")"; }
  function fmt(v) { return v === 0 ? "0" : isFinite(v) ? (Math.abs(v) >= 0.01 ? v.toFixed(4) : v.toExponential(2)) : "n/a (removed token)"; }

  // ---- state -------------------------------------------------------------------------------
  var S = { frame: 0, step: 0, layer: D.layers.length - 1, head: 0, method: D.methods[0].key, view: "frame",
            scale: "map", alpha: D.alpha };
  function readHash() {
    var h = location.hash.replace(/^#/, ""), out = {};
    h.split("&").forEach(function (kv) {
      if (!kv) return;
      var p = kv.split("="); out[decodeURIComponent(p[0])] = decodeURIComponent(p.slice(1).join("="));
    });
    return out;
  }
  function applyParams(p) {
    if (p.frame !== undefined) S.frame = Math.max(0, Math.min(D.frames.length - 1, parseInt(p.frame, 10) || 0));
    if (p.step !== undefined) S.step = Math.max(0, Math.min(D.steps.length - 1, parseInt(p.step, 10) || 0));
    if (p.layer !== undefined && D.layers.indexOf(p.layer) >= 0) S.layer = D.layers.indexOf(p.layer);
    if (p.head !== undefined) {
      var hi = D.heads.indexOf(p.head) >= 0 ? D.heads.indexOf(p.head) : D.heads.indexOf("head " + p.head);
      if (hi >= 0) S.head = hi;
    }
    if (p.method !== undefined && D.methods.some(function (m) { return m.key === p.method; })) S.method = p.method;
    if (p.view === "frame" || p.view === "model") S.view = p.view;
    if (p.scale === "map" || p.scale === "fixed") S.scale = p.scale;
  }
  function writeHash() {
    var h = "frame=" + S.frame + "&step=" + S.step + "&layer=" + encodeURIComponent(D.layers[S.layer]) +
            "&head=" + encodeURIComponent(D.heads[S.head]) + "&method=" + encodeURIComponent(S.method) +
            "&view=" + S.view + "&scale=" + S.scale;
    if (history.replaceState) history.replaceState(null, "", "#" + h);
  }

  // ---- DOM -----------------------------------------------------------------------------------
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  var $ = function (id) { return document.getElementById(id); };
  $("title").textContent = D.title;
  $("subtitle").textContent = "query: " + D.query + (D.source ? " · source: " + D.source : "");
  D.methods.forEach(function (m) {
    var lab = el("label"), inp = document.createElement("input");
    inp.type = "radio"; inp.name = "method"; inp.value = m.key; inp.id = "method-" + D.methods.indexOf(m);
    inp.addEventListener("change", function () { S.method = m.key; render(); });
    lab.appendChild(inp); lab.appendChild(document.createTextNode(m.label));
    $("methods").appendChild(lab);
  });
  var sliders = { frame: D.frames.length, step: D.steps.length, layer: D.layers.length, head: D.heads.length };
  Object.keys(sliders).forEach(function (k) {
    var s = $(k);
    s.max = String(sliders[k] - 1);
    s.addEventListener("input", function () { S[k] = parseInt(s.value, 10); render(); });
  });
  $("view").addEventListener("change", function () { S.view = $("view").value; render(); });
  $("scale").addEventListener("change", function () { S.scale = $("scale").value; render(); });
  $("alpha").addEventListener("input", function () { S.alpha = parseInt($("alpha").value, 10) / 100; render(); });

  var images = {};  // decoded frame images, by data URL
  function imageFor(url) {
    if (!url) return null;
    if (!images[url]) {
      var im = new Image();
      im.onload = function () { render(); };
      im.src = url;
      images[url] = im;
    }
    return images[url].complete && images[url].naturalWidth ? images[url] : null;
  }

  // ---- drawing -------------------------------------------------------------------------------
  function drawCamera(cam, vals, lo, hi) {
    var fig = el("figure"), cv = document.createElement("canvas"), cap = el("figcaption");
    var model = S.view === "model", W = model ? cam.model[1] : cam.frame[1], H = model ? cam.model[0] : cam.frame[0];
    var scale = Math.max(1, Math.round(360 / W));
    cv.width = W * scale; cv.height = H * scale;
    cv.setAttribute("data-camera", cam.name);
    var ctx = cv.getContext("2d");
    ctx.scale(scale, scale);
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, W, H);
    var rows = cam.grid[0], cols = cam.grid[1], p = cam.patch, box = cam.box;  // box: top, left, h, w (model px)
    var g = document.createElement("canvas"); g.width = cols; g.height = rows;
    var gctx = g.getContext("2d"), img = gctx.createImageData(cols, rows);
    for (var i = 0; i < rows * cols; i++) {
      var v = vals[cam.offset + i], c = rgb(D.cmap, (v - lo) / (hi - lo));
      img.data[4 * i] = c[0]; img.data[4 * i + 1] = c[1]; img.data[4 * i + 2] = c[2];
      img.data[4 * i + 3] = isFinite(v) ? 255 : 0;
    }
    gctx.putImageData(img, 0, 0);
    var frame = imageFor(cam.image), alpha = frame ? S.alpha : 1;
    if (model) {
      if (frame) {
        ctx.save(); ctx.translate(box[1] + box[3] / 2, box[0] + box[2] / 2);
        if (cam.rotate180) ctx.rotate(Math.PI);
        ctx.drawImage(frame, -box[3] / 2, -box[2] / 2, box[3], box[2]); ctx.restore();
      }
      ctx.imageSmoothingEnabled = false; ctx.globalAlpha = alpha;
      ctx.drawImage(g, 0, 0, cols * p, rows * p);
    } else {
      if (frame) ctx.drawImage(frame, 0, 0, W, H);
      ctx.imageSmoothingEnabled = D.interpolation === "bilinear"; ctx.globalAlpha = alpha;  // nearest: the patch grid
      ctx.save(); ctx.translate(W / 2, H / 2);
      if (cam.rotate180) ctx.rotate(Math.PI);
      ctx.drawImage(g, box[1] / p, box[0] / p, box[3] / p, box[2] / p, -W / 2, -H / 2, W, H);
      ctx.restore();
    }
    ctx.globalAlpha = 1;
    cv.addEventListener("mousemove", function (ev) {
      var r = cv.getBoundingClientRect(), x = (ev.clientX - r.left) / r.width * W, y = (ev.clientY - r.top) / r.height * H;
      var my, mx;
      if (model) { my = y; mx = x; } else {
        if (cam.rotate180) { y = H - y; x = W - x; }
        my = y * box[2] / H + box[0]; mx = x * box[3] / W + box[1];
      }
      var pr = Math.floor(my / p), pc = Math.floor(mx / p);
      if (pr < 0 || pc < 0 || pr >= rows || pc >= cols) return;
      hovered = { kind: "patch", camera: cam.name, row: pr, col: pc };
      showHover(D.frames[S.frame], vals);
    });
    cap.textContent = cam.name + (model ? " · model input" : " · original frame") + (frame || !cam.image ? "" : " (loading)");
    fig.appendChild(cv); fig.appendChild(cap);
    return fig;
  }

  // the last thing hovered (a patch, a word or a sink); its value is re-read after every render, so
  // switching method, step, layer or head never leaves a stale number under the new heading
  var hovered = null;
  function showHover(f, vals) {
    if (!hovered) return;
    var text = null;
    if (hovered.kind === "patch") {
      var cam = f.cameras.filter(function (c) { return c.name === hovered.camera; })[0];
      if (cam && hovered.row < cam.grid[0] && hovered.col < cam.grid[1])
        text = cam.name + " patch (row " + hovered.row + ", col " + hovered.col + "): " +
               fmt(vals[cam.offset + hovered.row * cam.grid[1] + hovered.col]);
    } else if (hovered.kind === "word" && hovered.index < f.words.length) {
      text = "word \u201c" + f.words[hovered.index] + "\u201d: " + fmt(vals[f.word_offset + hovered.index]);
    } else if (hovered.kind === "sink" && hovered.index < f.sinks.length) {
      text = "sink " + f.sinks[hovered.index] + ": " + fmt(vals[f.sink_offset + hovered.index]);
    }
    $("info").textContent = text === null ? "hover over a patch or a word to read its value" : text;
  }

  function render() {
    var f = D.frames[S.frame];
    if (!f.data[S.method]) S.method = Object.keys(f.data)[0];
    var u16 = mapBits(S.frame, S.method, S.step, S.layer, S.head), K = f.K, vals = new Float32Array(K);
    for (var i = 0; i < K; i++) vals[i] = HALF[u16[i]];
    var sh = f.data[S.method].shape, lo = 0, hi = 0;
    for (var k = 0; k < f.word_offset; k++) if (vals[k] > hi) hi = vals[k];
    if (S.scale === "fixed") hi = fixedMax(S.frame, S.method);
    if (!(hi > lo)) hi = lo + 1e-6;
    // controls
    Object.keys(sliders).forEach(function (name) { $(name).value = String(S[name]); });
    $("frame-value").textContent = f.label;
    var axisInfo = { step: [sh[0], D.steps[S.step]], layer: [sh[1], D.layers[S.layer]], head: [sh[2], D.heads[S.head]] };
    Object.keys(axisInfo).forEach(function (name) {
      var constant = axisInfo[name][0] === 1 && sliders[name] > 1;
      $(name).parentNode.classList.toggle("inactive", constant);
      $(name + "-value").textContent = constant ? (name === "head" ? "mean (only)" : "constant for this method")
                                                : (name === "layer" ? "layer " : name === "step" ? "step " : "") + axisInfo[name][1];
    });
    Array.prototype.forEach.call(document.querySelectorAll("#methods input"), function (inp) {
      inp.checked = inp.value === S.method; inp.disabled = !f.data[inp.value];
    });
    $("view").value = S.view; $("scale").value = S.scale; $("alpha").value = String(Math.round(S.alpha * 100));
    var mlabel = D.methods.filter(function (m) { return m.key === S.method; })[0].label;
    $("heading").textContent = mlabel + " · query: " + D.query + " · " + f.label +
      (sh[0] > 1 ? " · step " + D.steps[S.step] : "") + (sh[1] > 1 ? " · layer " + D.layers[S.layer] : "") +
      " · " + (sh[2] > 1 ? D.heads[S.head] : "mean over heads");
    // cameras
    var camDiv = $("cameras");
    while (camDiv.firstChild) camDiv.removeChild(camDiv.firstChild);
    f.cameras.forEach(function (cam) { camDiv.appendChild(drawCamera(cam, vals, lo, hi)); });
    if ((f.absent_cameras || []).length) {  // say which cameras the model did not get (e.g. a one-camera MP4)
      camDiv.appendChild(el("div", "absent", "absent: " + f.absent_cameras.join(", ") +
        " \u2014 no image (masked); the model saw only the cameras shown, and shares are of those"));
    }
    // colorbar
    var cb = $("colorbar"), cctx = cb.getContext("2d");
    for (var x = 0; x < 256; x++) { cctx.fillStyle = css(rgb(D.cmap, x / 255)); cctx.fillRect(x, 0, 1, 12); }
    $("cb-lo").textContent = fmt(lo); $("cb-hi").textContent = fmt(hi) + (S.scale === "fixed" ? " (fixed)" : "");
    // words
    var wDiv = $("words"), sDiv = $("sinks"), whi = 0;
    while (wDiv.firstChild) wDiv.removeChild(wDiv.firstChild);
    while (sDiv.firstChild) sDiv.removeChild(sDiv.firstChild);
    f.words.forEach(function (w, j) { var v = vals[f.word_offset + j]; if (v > whi) whi = v; });
    f.words.forEach(function (w, j) {
      var v = vals[f.word_offset + j], c = rgb(D.word_cmap, whi > 0 ? v / whi : 0), span = el("span", "word", w);
      var lum = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
      span.style.background = css(c); span.style.color = lum > 140 ? "#111" : "#fff";
      span.setAttribute("data-value", String(v));
      span.addEventListener("mouseenter", function () { hovered = { kind: "word", index: j }; showHover(f, vals); });
      wDiv.appendChild(span);
    });
    // the words' own colour scale, with numbers: 0 … the largest word of this map
    var ws = el("span", "word-scale"), wcv = document.createElement("canvas"), wctx = wcv.getContext("2d");
    wcv.width = 120; wcv.height = 10;
    for (var wx = 0; wx < 120; wx++) { wctx.fillStyle = css(rgb(D.word_cmap, wx / 119)); wctx.fillRect(wx, 0, 1, 10); }
    ws.appendChild(el("span", null, "0")); ws.appendChild(wcv); ws.appendChild(el("span", "word-scale-max", fmt(whi)));
    wDiv.appendChild(ws);
    f.sinks.forEach(function (s, j) {
      var v = vals[f.sink_offset + j], span = el("span", "sink", s + "  " + fmt(v));
      span.setAttribute("data-value", String(v));
      span.addEventListener("mouseenter", function () { hovered = { kind: "sink", index: j }; showHover(f, vals); });
      sDiv.appendChild(span);
    });
    showHover(f, vals);  // what is hovered keeps its place; its value follows method, step, layer, head
    var pmin = Infinity;  // a nearly flat map is said, with why, so it is not read as "nothing found"
    for (var q = 0; q < f.word_offset; q++) if (isFinite(vals[q]) && vals[q] < pmin) pmin = vals[q];
    var flat = f.word_offset > 0 && hi > 0 && (hi - pmin) <= 0.1 * hi;
    $("flat").textContent = !flat ? "" :
      "This map is nearly flat: every patch is within 10 % of the largest (" + fmt(pmin) + " \u2026 " + fmt(hi) +
      "). " + (S.method === "flow" ? "Attention flow is a max-flow: each patch's flow is capped by the narrowest " +
      "layer on its way to the query, so many patches carry the same bottleneck value. " : "") +
      "Compare raw attention or rollout, or another layer.";
    $("notes").textContent = "Scores stored as float16 (3 significant digits). Sliders marked 'constant' do not " +
      "apply to this method (e.g. attention flow computed only after the last layer).";
    // test hooks: state and a checksum of the displayed values
    document.body.setAttribute("data-state", JSON.stringify({ frame: S.frame, step: S.step, layer: D.layers[S.layer],
      head: D.heads[S.head], method: S.method, view: S.view }));
    document.body.setAttribute("data-checksum", String(fnv(u16)));
    document.body.setAttribute("data-max", String(hi));
    document.body.setAttribute("data-rendered", "1");
    writeHash();
  }

  var params = readHash();
  applyParams(params);
  render();
  if (params.drive) {  // "layer:5,head:2": move sliders through their input events, like a user
    document.body.setAttribute("data-checksum-initial", document.body.getAttribute("data-checksum"));
    params.drive.split(",").forEach(function (step) {
      var kv = step.split(":"), s = $(kv[0]);
      if (kv[0] === "hover") {  // hover:<camera>:<row>:<col> — a mouse move over that patch's centre
        var cv = document.querySelector('canvas[data-camera="' + kv[1] + '"]');
        var cam = D.frames[S.frame].cameras.filter(function (c) { return c.name === kv[1]; })[0];
        if (!cv || !cam || S.view !== "model") return;
        var r = cv.getBoundingClientRect(), p = cam.patch;
        var x = r.left + (parseInt(kv[3], 10) + 0.5) * p / cam.model[1] * r.width;
        var y = r.top + (parseInt(kv[2], 10) + 0.5) * p / cam.model[0] * r.height;
        cv.dispatchEvent(new MouseEvent("mousemove", { clientX: x, clientY: y, bubbles: true }));
        return;
      }
      if (kv[0] === "method") {  // method:<key> — click that method's radio button
        var radio = document.querySelector('#methods input[value="' + kv[1] + '"]');
        if (radio) { radio.checked = true; radio.dispatchEvent(new Event("change", { bubbles: true })); }
        return;
      }
      if (kv[0] === "hoverword") {  // hoverword:<index>
        var w = document.querySelectorAll("#words .word")[parseInt(kv[1], 10)];
        if (w) w.dispatchEvent(new MouseEvent("mouseenter"));
        return;
      }
      if (!s || s.type !== "range") return;
      var value = kv[0] === "layer" ? D.layers.indexOf(kv[1]) : kv[0] === "head" ? D.heads.indexOf(kv[1]) : parseInt(kv[1], 10);
      if (value < 0 || isNaN(value)) return;
      s.value = String(value);
      s.dispatchEvent(new Event("input", { bubbles: true }));
    });
    document.body.setAttribute("data-driven", "1");
  }
})();
