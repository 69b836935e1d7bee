// Drives headless Debian chromium through the VoiceRelay page: Connect, let the fake
// microphone (a WAV file; the page opens it once the server's conversation listens) speak, wait for the final transcript, the assistant's text and
// received assistant audio (inbound-rtp energy), screenshot, print one RESULT line.
// usage: node run.js URL MIC_WAV SCREENSHOT_PNG
'use strict';
const { chromium } = require('playwright-core');

(async () => {
  const [url, wav, shot] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      `--use-file-for-fake-audio-capture=${wav}`,
      '--allow-loopback-in-peer-connection',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
      '--autoplay-policy=no-user-gesture-required',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const page = await browser.newPage({ viewport: { width: 1000, height: 800 } });
  page.on('console', (m) => console.log('console:', m.text()));
  await page.goto(url);
  await page.click('#connect');
  const deadline = Date.now() + Number(process.env.BROWSER_TIMEOUT_MS || 150000);
  let r = null;
  for (;;) {
    r = await page.evaluate(async () => ({
      state: window.vr.state, finals: window.vr.finals, assistant: window.vr.assistant,
      errors: window.vr.errors, latencies: window.vr.latencies, micRms: window.vr.micRms || 0, micPeak: window.vr.micPeak || 0,
      voice: window.vr.voice, connectedAt: window.vr.connectedAt, listeningAt: window.vr.listeningAt, micAt: window.vr.micAt,
      inbound: await window.vrInboundAudio(),
      transcriptText: document.getElementById('transcript').textContent,
      events: window.vr.events.filter((e) => e.type !== 'partial'),
    }));
    const heard = r.inbound && r.inbound.totalAudioEnergy > 0.01;
    if ((r.finals.length > 0 && r.assistant.length > 0 && heard) || r.errors.length > 0 || Date.now() > deadline) break;
    await page.waitForTimeout(250);
  }
  await page.screenshot({ path: shot, fullPage: true });
  await page.click('#disconnect').catch(() => {});
  await page.waitForTimeout(300);
  console.log('RESULT ' + JSON.stringify(r));
  await browser.close();
})().catch((e) => { console.error(e); process.exit(2); });
