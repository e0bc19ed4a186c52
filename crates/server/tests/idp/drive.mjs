// What every browser test here shares: Debian's Chromium launched offline,
// a context that reaches 127.0.0.1 only, and a login through Berth's link
// and the provider's form.
import { chromium } from 'playwright-core';

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

// A page in a new context; nothing leaves the machine.
export async function offlinePage(browser, options = {}) {
  const context = await browser.newContext(options);
  await context.route('**/*', (route) => {
    const host = new URL(route.request().url()).hostname;
    return host === '127.0.0.1' ? route.continue() : route.abort();
  });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  return { context, page };
}

// Logs in from Berth's landing page; returns the "Signed in as" text.
export async function login(page, berth, user, password) {
  await page.goto(`${berth}/`);
  await page.click('a.login');
  await page.fill('#login', user);
  await page.fill('#password', password);
  await page.click('#submit');
  await page.waitForSelector('#whoami');
  return (await page.textContent('#whoami')).trim();
}
