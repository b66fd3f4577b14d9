// Saves a screenshot of a running node's dashboard: node test/screenshot.mjs URL API_KEY OUT.png
// [PHONE.png] (the second at 420 px wide).
// (scripts/screenshot-dashboard drives load while it runs). Waits for the chart to have moved.

import { launchChromium } from './helpers/browser.mjs';

const [url, key, out, phone] = process.argv.slice(2);
const browser = await launchChromium();
try {
  const page = await browser.context.newPage();
  await page.setViewportSize({ width: 1280, height: 960 });
  await page.goto(url);
  await page.fill('#api-key', key);
  await page.click('#key-form button');
  await page.waitForFunction(() => window.dashboard.series.deliveries.filter((v) => v > 0).length >= 20, null, { timeout: 60_000 });
  await page.waitForFunction(() => document.getElementById('rooms').childElementCount > 0, null, { timeout: 30_000 });
  await page.screenshot({ path: out, fullPage: true });
  if (phone) {
    await page.setViewportSize({ width: 420, height: 900 });
    await page.waitForFunction(() => document.getElementById('chart').width <= 420 * (window.devicePixelRatio || 1), null, { timeout: 30_000 });
    await page.screenshot({ path: phone, fullPage: true });
  }
} finally {
  await browser.close();
}
