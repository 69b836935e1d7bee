// VoiceRelay browser client: one WebRTC session (microphone up, assistant audio down, `events`
// data channel both ways), signalled with a WHIP-style POST /v1/sessions.
'use strict';
const $ = (id) => document.getElementById(id);
// Read by the end-to-end browser test; also handy from the console.
// `connectedAt`/`listeningAt`/`micAt`: performance.now() when Connect was pressed, when the
// server's conversation said it listens (its first `voice` event), when the microphone opened.
window.vr = { state: 'disconnected', finals: [], partial: '', assistant: [], latencies: [], drafts: [], events: [], errors: [],
  voice: null, connectedAt: null, listeningAt: null, micAt: null };

let pc = null, dc = null, mic = null, sender = null, location_ = null, meterCtx = null, turn = 0, current = null;
// Dual path: the verifier's decision on this turn's draft (it comes before the turn's latency
// row), and the row whose seam cell a later `seam` event fills.
let draft = null, seamCell = null;

function cell(row, text) { const td = document.createElement('td'); td.textContent = text; row.appendChild(td); return td; }

function setStatus(s) { window.vr.state = s; $('status').textContent = s; }
function showError(msg) { window.vr.errors.push(msg); $('error').textContent = msg; }
function para(parent, text) { const p = document.createElement('p'); p.textContent = text; parent.appendChild(p); return p; }
function authHeaders() {
  const t = $('token').value.trim();
  return t ? { Authorization: 'Bearer ' + t } : {};
}

function onEvent(ev) {
  window.vr.events.push(ev);
  switch (ev.type) {
    case 'partial':
      window.vr.partial = ev.text; $('partial').textContent = ev.text; break;
    case 'final':
      window.vr.finals.push(ev.text); window.vr.partial = '';
      $('partial').textContent = ''; para($('transcript'), ev.text); current = null; break;
    case 'assistant_text':
      window.vr.assistant.push(ev.text);
      if (!current) current = para($('assistant'), '');
      current.textContent += (current.textContent ? ' ' : '') + ev.text; break;
    case 'barge_in':
      if (current) current.textContent += ' [interrupted]';
      current = null; break;
    case 'state':
      setStatus('connected · ' + String(ev.to).toLowerCase()); break;
    case 'draft':
      window.vr.drafts.push(ev); draft = ev; break;
    case 'seam':
      if (seamCell) seamCell.textContent = Math.round(ev.gap_ms);
      seamCell = null; break;
    case 'turn_latency': {
      turn += 1; window.vr.latencies.push(ev);
      const row = document.createElement('tr');
      const cells = [turn, ev.endpointing_ms, ev.asr_final_ms, ev.llm_first_token_ms, ev.first_clause_ms, ev.tts_first_chunk_ms, ev.onset_ms];
      for (const c of cells) cell(row, c == null ? '–' : Math.round(c));
      // Which model's words were heard first, and why: a kept draft is the fast model's.
      cell(row, draft ? (draft.kept ? 'fast' : 'slow') : 'one model');
      const score = draft && draft.score != null ? draft.score.toFixed(2) + ' ' : '';
      const verdict = cell(row, draft ? score + (draft.kept ? 'kept' : 'dropped') : '–');
      if (draft) verdict.title = draft.text;
      seamCell = cell(row, '–');
      if (!draft || !draft.kept) seamCell = null;
      draft = null;
      $('latency').tBodies[0].appendChild(row); break;
    }
    case 'voice':
      window.vr.voice = ev.voice; $('voice').value = ev.voice; $('voice').disabled = false;
      // The first one means the conversation is reading our audio: only now is the microphone
      // opened, so nothing said before the server listens is lost.
      if (window.vr.listeningAt == null) { window.vr.listeningAt = performance.now(); openMic(); }
      break;
    case 'error':
      showError(ev.message); break;
  }
}

async function openMic() {
  try {
    mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true }, video: false });
    if (!pc || !sender) { mic.getTracks().forEach((t) => t.stop()); mic = null; return; }
    await sender.replaceTrack(mic.getAudioTracks()[0]);
    window.vr.micAt = performance.now();
    startMeter(mic);
  } catch (err) {
    showError('microphone: ' + (err.message || err));
  }
}

function startMeter(stream) {
  // Created in the Connect click (a user gesture): one made later, when the server says it
  // listens, would start suspended and the meter would never move.
  if (!meterCtx) meterCtx = new AudioContext();
  meterCtx.resume().catch(() => {});
  const an = meterCtx.createAnalyser(); an.fftSize = 1024;
  meterCtx.createMediaStreamSource(stream).connect(an);
  const buf = new Float32Array(an.fftSize);
  const tick = () => {
    if (!meterCtx) return;
    an.getFloatTimeDomainData(buf);
    let s = 0; for (const v of buf) s += v * v;
    const rms = Math.sqrt(s / buf.length);
    window.vr.micRms = rms; window.vr.micPeak = Math.max(window.vr.micPeak || 0, rms);
    $('level').style.width = Math.min(100, rms * 400) + '%';
    requestAnimationFrame(tick);
  };
  tick();
}

function waitForIce(pc, ms) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    const t = setTimeout(resolve, ms);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
    });
  });
}

async function connect() {
  $('connect').disabled = true; $('error').textContent = '';
  if (!meterCtx) meterCtx = new AudioContext();
  try {
    setStatus('connecting');
    window.vr.connectedAt = performance.now(); window.vr.listeningAt = null; window.vr.micAt = null;
    const cfg = await (await fetch('/v1/client-config', { headers: authHeaders() })).json();
    pc = new RTCPeerConnection({ iceServers: cfg.ice_servers });
    // The audio section is negotiated now; the microphone track joins it once the server's
    // conversation listens (see openMic).
    sender = pc.addTransceiver('audio', { direction: 'sendrecv' }).sender;
    dc = pc.createDataChannel('events');
    dc.onmessage = (e) => { try { onEvent(JSON.parse(e.data)); } catch (err) { showError('bad event: ' + err); } };
    pc.ontrack = (e) => { $('remote').srcObject = e.streams[0] || new MediaStream([e.track]); };
    pc.onconnectionstatechange = () => {
      const s = pc ? pc.connectionState : 'closed';
      if (s === 'connected') { setStatus('connected'); $('interrupt').disabled = false; $('text').disabled = false; }
      else if (s === 'failed' || s === 'closed') { showError('connection ' + s); disconnect(); }
      else setStatus(s);
    };
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc, 2000);
    const resp = await fetch('/v1/sessions', {
      method: 'POST',
      headers: Object.assign({ 'Content-Type': 'application/sdp' }, authHeaders()),
      body: pc.localDescription.sdp,
    });
    if (!resp.ok) {
      let why = resp.status + ' ' + resp.statusText;
      try { const j = await resp.json(); why = j.reason || why; } catch (_) {}
      throw new Error(why);
    }
    location_ = resp.headers.get('Location');
    await pc.setRemoteDescription({ type: 'answer', sdp: await resp.text() });
    $('disconnect').disabled = false;
  } catch (err) {
    showError(String(err.message || err));
    await disconnect();
  }
}

async function disconnect() {
  const loc = location_; location_ = null;
  if (loc) { try { await fetch(loc, { method: 'DELETE', headers: authHeaders() }); } catch (_) {} }
  if (pc) { pc.close(); pc = null; }
  sender = null;
  if (mic) { mic.getTracks().forEach((t) => t.stop()); mic = null; }
  if (meterCtx) { meterCtx.close(); meterCtx = null; }
  dc = null;
  $('level').style.width = '0';
  $('connect').disabled = false; $('disconnect').disabled = true;
  $('interrupt').disabled = true; $('text').disabled = true; $('voice').disabled = true;
  setStatus('disconnected');
}

function send(msg) { if (dc && dc.readyState === 'open') dc.send(JSON.stringify(msg)); }

// Inbound assistant audio as the browser sees it (used by the end-to-end test).
window.vrInboundAudio = async () => {
  if (!pc) return null;
  const out = { packetsReceived: 0, bytesReceived: 0, totalAudioEnergy: 0, totalSamplesReceived: 0 };
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') {
      out.packetsReceived += s.packetsReceived || 0; out.bytesReceived += s.bytesReceived || 0;
      out.totalAudioEnergy += s.totalAudioEnergy || 0; out.totalSamplesReceived += s.totalSamplesReceived || 0;
    }
  });
  return out;
};

$('connect').onclick = connect;
$('disconnect').onclick = disconnect;
$('interrupt').onclick = () => send({ type: 'interrupt' });
$('voice').onchange = (e) => send({ type: 'config', voice: e.target.value });
$('text').onkeydown = (e) => {
  if (e.key === 'Enter' && e.target.value.trim()) {
    send({ type: 'text', text: e.target.value.trim() });
    para($('transcript'), '⌨ ' + e.target.value.trim());
    e.target.value = '';
  }
};
window.addEventListener('beforeunload', () => { if (location_) navigator.sendBeacon && fetch(location_, { method: 'DELETE', keepalive: true, headers: authHeaders() }); });
