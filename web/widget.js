/*
 * voice-edge browser widget. Add it to a page with one tag:
 *
 *   <script src="https://NODE/widget.js" async></script>
 *
 * It renders into <div id="voice-edge-widget"> when the page has one, else
 * as a floating box. Signalling is WHIP-style: POST the SDP offer to
 * NODE/webrtc/sessions, get the answer and a Location to DELETE at the end.
 * A data channel ("voice-edge") carries JSON: call state, transcripts and
 * replies from the node; keypad digits, hang-up and the 1-5 rating to it.
 *
 * No build step, no dependencies. Test hooks: data-testid attributes
 * (call-button, hangup-button, transcript, agent-reply, status, rating,
 * agent-level with data-peak-rms).
 */
(function () {
  "use strict";
  if (window.voiceEdgeWidget) return;

  var script = document.currentScript;
  var base = script && script.src ? new URL(script.src, location.href).origin : location.origin;

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text) e.textContent = text;
    return e;
  }

  // Style, once.
  if (!document.querySelector("link[data-voice-edge]")) {
    var link = el("link", { rel: "stylesheet", href: base + "/widget.css", "data-voice-edge": "" });
    document.head.appendChild(link);
  }

  // The widget's DOM.
  var root = el("div", { class: "ve-widget", "data-testid": "widget" });
  var head = el("div", { class: "ve-head" });
  head.appendChild(el("span", { class: "ve-title" }, "Voice assistant"));
  var status = el("span", { class: "ve-status", "data-testid": "status", "data-state": "idle", role: "status" }, "Ready");
  head.appendChild(status);
  root.appendChild(head);

  var buttons = el("div", { class: "ve-buttons" });
  var callBtn = el("button", { class: "ve-call", type: "button", "data-testid": "call-button" }, "Call");
  var hangBtn = el("button", { class: "ve-hangup", type: "button", "data-testid": "hangup-button", disabled: "" }, "Hang up");
  buttons.appendChild(callBtn);
  buttons.appendChild(hangBtn);
  root.appendChild(buttons);

  var level = el("div", { class: "ve-level", "data-testid": "agent-level", "data-peak-rms": "0", title: "agent voice level" });
  var levelBar = el("div");
  level.appendChild(levelBar);
  root.appendChild(level);

  var keypad = el("div", { class: "ve-keypad", "aria-label": "keypad" });
  "123456789*0#".split("").forEach(function (d) {
    var b = el("button", { type: "button", "data-testid": "key-" + d, disabled: "" }, d);
    b.addEventListener("click", function () { send({ type: "dtmf", digit: d }); });
    keypad.appendChild(b);
  });
  root.appendChild(keypad);

  var transcript = el("ol", { class: "ve-transcript", "data-testid": "transcript", "aria-live": "polite" });
  root.appendChild(transcript);
  var reply = el("div", { class: "ve-reply", "data-testid": "agent-reply" });
  root.appendChild(reply);

  var rating = el("div", { class: "ve-rating", "data-testid": "rating", hidden: "" });
  rating.appendChild(el("div", {}, "How did we do?"));
  var stars = el("div", { class: "ve-stars" });
  [1, 2, 3, 4, 5].forEach(function (n) {
    var b = el("button", { type: "button", "data-testid": "rating-" + n, "aria-label": n + " of 5" }, String(n) + "\u2605");
    b.addEventListener("click", function () { rate(n); });
    stars.appendChild(b);
  });
  rating.appendChild(stars);
  root.appendChild(rating);

  function mount() {
    var host = document.getElementById("voice-edge-widget");
    if (host) host.appendChild(root); else { root.classList.add("ve-floating"); document.body.appendChild(root); }
  }
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);

  // Call state.
  var pc = null, dc = null, mic = null, sessionUrl = null, audioEl = null, audioCtx = null, meterTimer = null;
  var partialItem = null, ended = false, rated = false;
  var labels = {
    idle: "Ready", microphone: "Allow the microphone\u2026", connecting: "Connecting\u2026", connected: "Connected",
    listening: "Listening", caller_speaking: "Hearing you", thinking: "Thinking\u2026", agent_speaking: "Speaking",
    transferring: "Transferring", ended: "Call ended", rated: "Thanks!", error: "Error"
  };

  function setStatus(state, detail) {
    status.setAttribute("data-state", state);
    status.textContent = (labels[state] || state) + (detail ? ": " + detail : "");
  }

  function setKeypad(on) {
    Array.prototype.forEach.call(keypad.querySelectorAll("button"), function (b) { b.disabled = !on; });
  }

  function line(cls, text) {
    var li = el("li", { class: cls }, text);
    transcript.appendChild(li);
    transcript.scrollTop = transcript.scrollHeight;
    return li;
  }

  function send(obj) {
    if (dc && dc.readyState === "open") { dc.send(JSON.stringify(obj)); return true; }
    return false;
  }

  function onMessage(ev) {
    var m;
    try { m = JSON.parse(ev.data); } catch (e) { return; }
    switch (m.type) {
      case "state":
        if (!ended) setStatus(m.state);
        break;
      case "partial":
        if (!partialItem) partialItem = line("ve-caller ve-partial", "");
        partialItem.textContent = m.text;
        break;
      case "transcript":
        if (partialItem) { partialItem.remove(); partialItem = null; }
        line("ve-caller", m.text);
        break;
      case "reply":
        line("ve-agent", m.text);
        reply.textContent = m.text;
        break;
      case "ended":
        callEnded(m.reason);
        break;
      case "rated":
        rated = true;
        setStatus("rated");
        rating.setAttribute("data-rated", String(m.score));
        rating.hidden = true;
        teardown();
        break;
      case "error":
        console.warn("voice-edge:", m.message);
        break;
    }
  }

  function startMeter(stream) {
    try {
      audioCtx = audioCtx || new (window.AudioContext || window.webkitAudioContext)();
      if (audioCtx.state === "suspended") audioCtx.resume();
      var src = audioCtx.createMediaStreamSource(stream);
      var analyser = audioCtx.createAnalyser();
      analyser.fftSize = 2048;
      src.connect(analyser);
      var buf = new Float32Array(analyser.fftSize);
      var peak = 0;
      meterTimer = setInterval(function () {
        analyser.getFloatTimeDomainData(buf);
        var sum = 0;
        for (var i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
        var rms = Math.sqrt(sum / buf.length);
        if (rms > peak) { peak = rms; level.setAttribute("data-peak-rms", rms.toFixed(5)); }
        levelBar.style.width = Math.min(100, Math.round(rms * 400)) + "%";
      }, 50);
    } catch (e) {
      console.warn("voice-edge: no level meter:", e);
    }
  }

  function waitForIce(conn, ms) {
    if (conn.iceGatheringState === "complete") return Promise.resolve();
    return new Promise(function (resolve) {
      var t = setTimeout(resolve, ms);
      conn.addEventListener("icegatheringstatechange", function () {
        if (conn.iceGatheringState === "complete") { clearTimeout(t); resolve(); }
      });
    });
  }

  async function call() {
    callBtn.disabled = true;
    ended = false; rated = false;
    rating.hidden = true; rating.removeAttribute("data-rated");
    transcript.textContent = ""; reply.textContent = ""; partialItem = null;
    level.setAttribute("data-peak-rms", "0");
    try {
      setStatus("microphone");
      mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } });
      setStatus("connecting");
      audioCtx = audioCtx || new (window.AudioContext || window.webkitAudioContext)();
      pc = new RTCPeerConnection();
      mic.getAudioTracks().forEach(function (t) { pc.addTrack(t, mic); });
      dc = pc.createDataChannel("voice-edge");
      dc.onmessage = onMessage;
      dc.onopen = function () { setKeypad(true); };
      pc.ontrack = function (ev) {
        var stream = (ev.streams && ev.streams[0]) || new MediaStream([ev.track]);
        audioEl = audioEl || el("audio", { autoplay: "" });
        audioEl.srcObject = stream;
        var p = audioEl.play();
        if (p && p.catch) p.catch(function () {});
        startMeter(stream);
      };
      pc.onconnectionstatechange = function () {
        var s = pc && pc.connectionState;
        if (s === "connected" && !ended) setStatus("connected");
        if ((s === "failed" || s === "closed") && !ended) callEnded("connection " + s);
      };
      var offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      await waitForIce(pc, 2000);
      var res = await fetch(base + "/webrtc/sessions", {
        method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp
      });
      var body = await res.text();
      if (res.status !== 201) throw new Error(res.status + " " + body.trim());
      sessionUrl = new URL(res.headers.get("Location"), base).href;
      await pc.setRemoteDescription({ type: "answer", sdp: body });
      hangBtn.disabled = false;
    } catch (e) {
      setStatus("error", e && e.message ? e.message : String(e));
      teardown();
    }
  }

  function callEnded(reason) {
    if (ended) return;
    ended = true;
    setStatus("ended", reason || "");
    hangBtn.disabled = true;
    setKeypad(false);
    if (mic) mic.getTracks().forEach(function (t) { t.stop(); });
    if (dc && dc.readyState === "open" && !rated) {
      rating.hidden = false;
    } else {
      teardown();
    }
  }

  function hangup() {
    hangBtn.disabled = true;
    if (!send({ type: "hangup" })) { callEnded("hung up"); teardown(); }
  }

  function rate(n) {
    if (!send({ type: "rating", score: n })) teardown();
  }

  function teardown() {
    if (sessionUrl) {
      fetch(sessionUrl, { method: "DELETE", keepalive: true }).catch(function () {});
      sessionUrl = null;
    }
    if (meterTimer) { clearInterval(meterTimer); meterTimer = null; }
    if (mic) { mic.getTracks().forEach(function (t) { t.stop(); }); mic = null; }
    if (dc) { try { dc.close(); } catch (e) {} dc = null; }
    if (pc) { try { pc.close(); } catch (e) {} pc = null; }
    hangBtn.disabled = true;
    setKeypad(false);
    callBtn.disabled = false;
  }

  callBtn.addEventListener("click", call);
  hangBtn.addEventListener("click", hangup);
  window.addEventListener("pagehide", function () { if (sessionUrl) teardown(); });

  window.voiceEdgeWidget = { call: call, hangup: hangup, rate: rate, base: base };
})();
