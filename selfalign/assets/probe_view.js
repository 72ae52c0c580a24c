// The per-probe view of a selfalign report (see selfalign/probe_view.py for the data format).
// Offline and self-contained: the data is the base64 text of the #pv-data element, gzip-compressed JSON.
// Every element is built with textContent: no data is ever parsed as HTML.
(function () {
  "use strict";

  var byId = function (id) { return document.getElementById(id); };
  var statusLine = byId("pv-status");

  function fail(message) {
    statusLine.textContent = message;
    statusLine.className = "note pv-error";
  }

  function node(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function decode() {
    var b64 = byId("pv-data").textContent.replace(/\s+/g, "");
    var bin = atob(b64);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).text().then(JSON.parse);
  }

  if (typeof DecompressionStream === "undefined" || typeof Blob.prototype.stream !== "function") {
    fail("This browser cannot read the probe data (it needs DecompressionStream: Chrome/Edge 80+, " +
         "Firefox 113+, Safari 16.4+).");
    return;
  }
  decode().then(start, function (err) { fail("Could not read the probe data: " + err); });

  function start(D) {
    var n = D.n, C = D.cols;

    function get(name, i) {
      var c = C[name];
      if (c === undefined) return null;
      if (Array.isArray(c)) return c[i];
      var at = c.idx[i];
      return at < 0 ? null : c.values[at];
    }

    function variantK(i) {
      return get("n_demos", i) > 0 || programHasDemos[get("program", i)] ? String(get("k", i)) : "";
    }

    function result(i) {
      if (!C.ok[i]) return "failed";
      return C.agreement[i] === 1 ? "agrees" : "disagrees";
    }

    function optionText(i, code) {
      var codes = get("option_codes", i) || [];
      var shown = get("options_shown", i);
      var p = D.prompt[i];
      if (!shown && p >= 0) shown = D.prompts[p][4];
      if (code === null || code === undefined) return "";
      var at = codes.indexOf(code);
      var label = shown && at >= 0 ? shown[at] : undefined;
      return label === undefined || label === code ? String(code) : label + " (" + code + ")";
    }

    // programs that show demonstrations in at least one row: their k is meaningful
    var programHasDemos = {};
    for (var r = 0; r < n; r++) {
      if (C.n_demos[r] > 0) programHasDemos[get("program", r)] = true;
    }

    // --- filters ---------------------------------------------------------------------------------------
    var selects = {
      country: byId("pv-country"), program: byId("pv-program"), k: byId("pv-k"),
      language: byId("pv-language"), topic: byId("pv-topic"), result: byId("pv-result")
    };
    function fill(select, values) {
      values.forEach(function (v) {
        var o = node("option", v);
        o.value = v;
        select.appendChild(o);
      });
    }
    ["country", "program", "language", "topic"].forEach(function (name) {
      fill(selects[name], C[name].values.slice().sort());
    });
    var ks = {};
    for (r = 0; r < n; r++) ks[C.k[r]] = true;
    fill(selects.k, Object.keys(ks).sort(function (a, b) { return a - b; }));

    var lowerPrompts = null, lowerMeta = null;
    function haystacks() {
      if (lowerMeta) return;
      lowerPrompts = D.prompts.map(function (p) {
        return (p[0] + "\n" + p[5].map(function (d) { return d.join(" "); }).join("\n")).toLowerCase();
      });
      lowerMeta = new Array(n);
      for (var i = 0; i < n; i++) {
        lowerMeta[i] = [get("country", i), get("program", i), get("question_id", i), get("topic", i),
          get("language", i), get("model_choice", i), get("country_majority", i), get("error", i),
          get("method", i), get("model", i)].join(" ").toLowerCase();
      }
    }

    var matches = [], page = 0, size = 50;
    function apply() {
      var want = {};
      Object.keys(selects).forEach(function (name) { want[name] = selects[name].value; });
      var text = byId("pv-text").value.trim().toLowerCase();
      if (text) haystacks();
      var out = [];
      for (var i = 0; i < n; i++) {
        if (want.country && get("country", i) !== want.country) continue;
        if (want.program && get("program", i) !== want.program) continue;
        if (want.k && String(C.k[i]) !== want.k) continue;
        if (want.language && get("language", i) !== want.language) continue;
        if (want.topic && get("topic", i) !== want.topic) continue;
        if (want.result && result(i) !== want.result) continue;
        if (text) {
          var p = D.prompt[i];
          if (lowerMeta[i].indexOf(text) < 0 && (p < 0 || lowerPrompts[p].indexOf(text) < 0)) continue;
        }
        out.push(i);
      }
      matches = out;
      page = 0;
      render();
    }

    // --- the table ---------------------------------------------------------------------------------------
    var tbody = byId("pv-table").tBodies[0];
    function pages() { return Math.max(1, Math.ceil(matches.length / size)); }
    function render() {
      page = Math.min(Math.max(page, 0), pages() - 1);
      var frag = document.createDocumentFragment();
      var end = Math.min(matches.length, (page + 1) * size);
      for (var j = page * size; j < end; j++) {
        var i = matches[j];
        var tr = node("tr");
        tr.dataset.row = String(i);
        tr.tabIndex = 0;
        var res = result(i);
        [String(i), get("country", i), get("language", i), get("program", i), variantK(i),
          get("question_id", i), get("topic", i), optionText(i, get("model_choice", i)),
          optionText(i, get("country_majority", i)), res].forEach(function (v) { tr.appendChild(node("td", v)); });
        tr.lastChild.className = "pv-" + res;
        frag.appendChild(tr);
      }
      tbody.replaceChildren(frag);
      statusLine.textContent = matches.length + " of " + n + " probes match" +
        (D.prompts_stored ? "" : " (" + D.not_stored + ")") + ".";
      byId("pv-page").textContent = "page " + (page + 1) + " of " + pages();
      byId("pv-first").disabled = byId("pv-prev").disabled = page === 0;
      byId("pv-next").disabled = byId("pv-last").disabled = page >= pages() - 1;
    }

    var timer = null;
    Object.keys(selects).forEach(function (name) { selects[name].addEventListener("change", apply); });
    byId("pv-text").addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(apply, 150);
    });
    byId("pv-first").addEventListener("click", function () { page = 0; render(); });
    byId("pv-prev").addEventListener("click", function () { page -= 1; render(); });
    byId("pv-next").addEventListener("click", function () { page += 1; render(); });
    byId("pv-last").addEventListener("click", function () { page = pages() - 1; render(); });
    byId("pv-size").addEventListener("change", function () {
      size = parseInt(byId("pv-size").value, 10) || 50;
      page = 0;
      render();
    });
    function rowOf(event) {
      var tr = event.target.closest("tr");
      return tr && tr.dataset.row !== undefined ? parseInt(tr.dataset.row, 10) : null;
    }
    tbody.addEventListener("click", function (event) {
      var i = rowOf(event);
      if (i !== null) open(i, true);
    });
    tbody.addEventListener("keydown", function (event) {
      var i = rowOf(event);
      if (i !== null && event.key === "Enter") open(i, true);
    });

    // --- one probe ---------------------------------------------------------------------------------------
    var detail = byId("pv-detail");

    function pct(v) { return v === null || v === undefined ? "-" : (100 * v).toFixed(1) + "%"; }
    function num(v, digits) { return v === null || v === undefined ? "-" : Number(v).toFixed(digits); }

    function table(header, rows, cls) {
      var t = node("table", null, cls);
      var head = node("tr");
      header.forEach(function (h) { head.appendChild(node("th", h)); });
      t.appendChild(node("thead")).appendChild(head);
      var body = t.appendChild(node("tbody"));
      rows.forEach(function (cells) {
        var tr = body.appendChild(node("tr"));
        cells.forEach(function (c) {
          if (c instanceof Node) tr.appendChild(node("td")).appendChild(c);
          else tr.appendChild(node("td", c));
        });
      });
      return t;
    }

    function bar(value, cls) {
      var box = node("span", null, "pv-bar " + cls);
      var fill = box.appendChild(node("span"));
      fill.style.width = (value === null || value === undefined ? 0 : Math.max(0, Math.min(1, value)) * 100) + "%";
      var wrap = node("span", null, "pv-barcell");
      wrap.appendChild(box);
      wrap.appendChild(node("span", pct(value), "pv-pct"));
      return wrap;
    }

    function open(i, scroll) {
      if (!(i >= 0 && i < n)) return;
      var p = D.prompt[i];
      var prompt = p >= 0 ? D.prompts[p] : null;
      var codes = get("option_codes", i) || [];
      var shown = get("options_shown", i) || (prompt ? prompt[4] : null) || codes;
      var probs = C.probs[i], shares = get("country_shares", i);
      var kText = variantK(i);
      detail.replaceChildren();
      detail.hidden = false;
      detail.dataset.row = String(i);

      var head = node("h3", "Probe #" + i + ": " + get("country", i) + ", " + get("question_id", i) + " [" +
        get("topic", i) + "], " + get("program", i) + (kText ? " k=" + kText : ""));
      var close = node("button", "close", "pv-close");
      close.type = "button";
      close.addEventListener("click", function () {
        detail.hidden = true;
        if (history.replaceState) history.replaceState(null, "", "#probes");
      });
      head.appendChild(close);
      detail.appendChild(head);

      var res = result(i);
      var facts = [
        ["result", res === "failed" ? "failed (left out of every metric)" :
          res === "agrees" ? "the model's most likely answer is the country's majority" :
            "the model's most likely answer is not the country's majority"],
        ["method", get("method", i) || "-"],
        ["off-option mass", num(C.off_option_mass[i], 3)],
        ["error", get("error", i) || ""],
        ["model", get("model", i)],
        ["run", get("run", i)],
        ["survey, protocol, split", [get("survey", i), get("protocol", i), get("split", i)].join(", ")],
        ["language (demonstrations)", get("language", i) + " (" + (get("demo_language", i) || "-") + ")"],
        ["k, demonstrations shown, seed", [C.k[i], C.n_demos[i], C.seed[i]].join(", ")],
        ["scale", get("scale", i) || "-"],
        ["JS similarity, W similarity", num(C.js_similarity[i], 3) + ", " + num(C.wasserstein_similarity[i], 3)],
        ["tokens (prompt, completion), latency", C.prompt_tokens[i] + ", " + C.completion_tokens[i] + ", " +
          num(C.latency_s[i], 3) + " s" + (C.cached[i] ? " (cached)" : "")],
        ["prompt sha256", get("prompt_sha256", i) || "-"]
      ].filter(function (f) { return f[1] !== ""; });
      var dl = node("dl", null, "pv-facts");
      facts.forEach(function (f) { dl.appendChild(node("dt", f[0])); dl.appendChild(node("dd", f[1])); });
      detail.appendChild(dl);

      detail.appendChild(node("h4", "Distribution: the model beside the country"));
      var choice = get("model_choice", i), majority = get("country_majority", i);
      var rows = codes.map(function (code, j) {
        var marks = [];
        if (code === choice) marks.push("model's answer");
        if (code === majority) marks.push("country's majority");
        return [code, shown[j] !== undefined ? shown[j] : code,
          bar(probs ? probs[j] : null, "pv-model"), bar(shares ? shares[j] : null, "pv-country"), marks.join(", ")];
      });
      detail.appendChild(table(["option", "shown as", "model", get("country", i) + " (real)", ""], rows, "pv-dist"));
      if (!probs) detail.appendChild(node("p", "No model distribution: the probe failed.", "note"));

      detail.appendChild(node("h4", "Demonstrations (in prompt order, with the answers shown)"));
      if (prompt) {
        if (prompt[5].length) {
          detail.appendChild(table(["question", "text shown", "answer shown"], prompt[5], "pv-demos"));
        } else {
          detail.appendChild(node("p", "No demonstrations shown.", "note"));
        }
      } else {
        var ids = get("demo_ids", i) || [];
        detail.appendChild(node("p", (get("prompt_sha256", i) ? D.not_stored : "no prompt was built") +
          (ids.length ? "; demonstration questions from the run table: " + ids.join(", ") : "") + ".",
        "note pv-missing"));
      }

      detail.appendChild(node("h4", "Prompt as sent"));
      if (!prompt) {
        detail.appendChild(node("p", get("prompt_sha256", i) ? D.not_stored + "." :
          "No prompt was built: " + (get("error", i) || "unknown reason") + ".", "note pv-missing"));
      } else {
        detail.appendChild(node("p", "Transcript (base models score each option as its continuation):", "note"));
        detail.appendChild(node("pre", prompt[0], "pv-transcript"));
        detail.appendChild(node("p", "Continuations: " + prompt[1].map(function (c) {
          return JSON.stringify(c);
        }).join(", "), "note pv-continuations"));
        var chat = node("details", null, "pv-chat");
        chat.appendChild(node("summary", "Chat messages (" + prompt[2].length + "; chat models answer with a label: " +
          prompt[3].join(", ") + ")"));
        prompt[2].forEach(function (m) {
          var box = chat.appendChild(node("div", null, "pv-msg pv-role-" + m[0]));
          box.appendChild(node("b", m[0]));
          box.appendChild(node("pre", m[1]));
        });
        detail.appendChild(chat);
      }
      if (history.replaceState) history.replaceState(null, "", "#probe-" + i);
      if (scroll) detail.scrollIntoView({ block: "start" });
    }

    apply();
    var m = /^#probe-(\d+)$/.exec(location.hash);
    if (m) open(parseInt(m[1], 10), true);
    document.body.dataset.probesReady = "1";
  }
})();
