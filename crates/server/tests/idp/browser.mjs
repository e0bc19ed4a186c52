// Drives a real Chromium through Berth's login page and the provider's
// login form, creates an API key, takes a screenshot, and logs out.
// Usage: node browser.mjs BERTH_URL USER PASSWORD KEY_LABEL SCREENSHOT.png
// Prints one JSON line: {"who": ..., "key": ..., "rows": ..., "after_logout": ...}.
import { launch, offlinePage, login } from './drive.mjs';

const [berth, user, password, label, shot] = process.argv.slice(2);
const browser = await launch();
try {
  const { page } = await offlinePage(browser);
  const who = await login(page, berth, user, password);
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
