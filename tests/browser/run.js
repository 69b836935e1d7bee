// Drives headless Debian chromium through the VoiceRelay page: Connect, let the fake
// microphone (a WAV file; the page opens it once the server's conversation listens) speak, wait for the final transcript, the assistant's text and
// received assistant audio (inbound-rtp energy), screenshot, print one RESULT line.
// usage: node run.js URL MIC_WAV SCREENSHOT_PNG
//
// With FAKE_VIDEO_Y4M set, the page's camera is on (`?camera=1`) and Chromium's fake camera
// plays that file (looped). The driver then also waits for a `scene` event, the end of an answer
// and at least MIN_VIDEO_MS of video, and adds the page's outbound-video samples (`window.vr.video`)
// and the server's /metrics text to the result. With VIDEO_ONLY_MS set as well it only lets the
// camera send for that long (no conversation needed): the bitrate control run.
//
// With RELOAD_RESUME=1 the driver then reloads the page and presses Connect again: the page must
// resume the same session (its `resumed` event, the same session URL); `r.resume` reports it.
'use strict';
const { chromium } = require('playwright-core');

(async () => {
  const [url, wav, shot] = process.argv.slice(2);
  const y4m = process.env.FAKE_VIDEO_Y4M || '';
  const videoOnlyMs = Number(process.env.VIDEO_ONLY_MS || 0);
  const minVideoMs = Number(process.env.MIN_VIDEO_MS || 0);
  const args = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    `--use-file-for-fake-audio-capture=${wav}`,
    '--allow-loopback-in-peer-connection',
    '--disable-features=WebRtcHideLocalIpsWithMdns',
    '--autoplay-policy=no-user-gesture-required',
    '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
  if (y4m) args.push(`--use-file-for-fake-video-capture=${y4m}`);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args,
  });
  const page = await browser.newPage({ viewport: { width: 1000, height: 800 } });
  page.on('console', (m) => console.log('console:', m.text()));
  // The server's SDP answer, to report what the video section negotiated (REMB, transport-cc).
  let answer = null;
  page.on('response', async (resp) => {
    if (resp.request().method() === 'POST' && resp.url().endsWith('/v1/sessions')) answer = await resp.text().catch(() => null);
  });
  // PAGE_QUERY adds page parameters to the camera run (e.g. `&codec=h264`).
  await page.goto(y4m ? url + '?camera=1' + (process.env.PAGE_QUERY || '') : url);
  await page.click('#connect');
  const deadline = Date.now() + Number(process.env.BROWSER_TIMEOUT_MS || 150000);
  let r = null;
  for (;;) {
    r = await page.evaluate(async () => ({
      state: window.vr.state, finals: window.vr.finals, assistant: window.vr.assistant,
      errors: window.vr.errors, latencies: window.vr.latencies, micRms: window.vr.micRms || 0, micPeak: window.vr.micPeak || 0,
      voice: window.vr.voice, connectedAt: window.vr.connectedAt, listeningAt: window.vr.listeningAt, micAt: window.vr.micAt,
      cameraAt: window.vr.cameraAt, now: performance.now(), scenes: window.vr.scenes || [],
      inbound: await window.vrInboundAudio(),
      transcriptText: document.getElementById('transcript').textContent,
      sceneText: (document.getElementById('scene') || {}).textContent || '',
      events: window.vr.events.filter((e) => e.type !== 'partial'),
    }));
    const heard = r.inbound && r.inbound.totalAudioEnergy > 0.01;
    let done = r.finals.length > 0 && r.assistant.length > 0 && heard;
    if (y4m) {
      const filmed = r.cameraAt == null ? 0 : r.now - r.cameraAt;
      const answered = r.events.some((e) => e.type === 'answer_end');
      done = videoOnlyMs > 0 ? filmed >= videoOnlyMs
        : done && answered && r.scenes.length > 0 && filmed >= minVideoMs;
    }
    if (done || r.errors.length > 0 || Date.now() > deadline) break;
    await page.waitForTimeout(250);
  }
  // The server's counters, read from inside the namespace by the page's own origin.
  r.metrics = await page.evaluate(async () => (await fetch('/metrics')).text()).catch((e) => 'error: ' + e);
  if (y4m) {
    // One more outbound sample: every frame the server counts was encoded before it.
    r.video = await page.evaluate(async () => {
      const last = await window.vrOutboundVideo();
      return last ? window.vr.video.concat([last]) : window.vr.video;
    });
  }
  r.answerSdp = answer;
  await page.screenshot({ path: shot, fullPage: true });
  if (process.env.RELOAD_RESUME === '1' && r.errors.length === 0) {
    const before = await page.evaluate(() => window.vr.session);
    await page.reload();
    await page.click('#connect');
    const until = Date.now() + 30000;
    let after = null;
    for (;;) {
      after = await page.evaluate(() => ({ session: window.vr.session, resumed: window.vr.resumed, state: window.vr.state,
        errors: window.vr.errors, events: window.vr.events.map((e) => e.type) }));
      if (after.resumed || after.errors.length > 0 || Date.now() > until) break;
      await page.waitForTimeout(100);
    }
    after.before = before;
    r.resume = after;
  }
  await page.click('#disconnect').catch(() => {});
  await page.waitForTimeout(300);
  console.log('RESULT ' + JSON.stringify(r));
  await browser.close();
})().catch((e) => { console.error(e); process.exit(2); });
