// Drives a real Chromium through Berth's login page and the provider's
// login form, creates an API key, takes a screenshot, and logs out.
// Usage: node browser.mjs BERTH_URL USER PASSWORD KEY_LABEL SCREENSHOT.png
// Prints one JSON line: {"who": ..., "key": ..., "rows": ..., "after_logout": ...}.
import { chromium } from 'playwright-core';

const [berth, user, password, label, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const context = await browser.newContext();
  // Nothing leaves the machine.
  await context.route('**/*', (route) => {
    const host = new URL(route.request().url()).hostname;
    return host === '127.0.0.1' ? route.continue() : route.abort();
  });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  await page.goto(`${berth}/`);
  await page.click('a.login');
  await page.fill('#login', user);
  await page.fill('#password', password);
  await page.click('#submit');
  await page.waitForSelector('#whoami');
  const who = (await page.textContent('#whoami')).trim();
  await page.goto(`${berth}/ui/account`);
  await page.fill('input[name=label]', label);
  await page.click('#create button');
  await page.waitForSelector('#secret');
  const key = (await page.textContent('#secret')).trim();
  await page.waitForFunction(() => document.querySelectorAll('#keys tr').length > 0);
  const rows = await page.locator('#keys tr').count();
  await page.screenshot({ path: shot, fullPage: true });
  await page.click('#logout');
  await page.waitForSelector('a.login');
  const afterLogout = (await page.textContent('body')).includes('Log in with');
  console.log(JSON.stringify({ who, key, rows, after_logout: afterLogout }));
} finally {
  await browser.close();
}
