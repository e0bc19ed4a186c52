// Drives a real Chromium through Berth's web interface: anonymous browsing,
// search as you type, tag filter, copy, compare, login through the provider,
// a private repository appearing, delete with confirmation, API key create
// and revoke, logout. axe-core checks every page; every page is
// photographed in the light and the dark theme.
// Usage: node ui.mjs BERTH_URL USER PASSWORD SCREENSHOT_DIR
// Prints one JSON line with what it saw; the Rust test judges it.
import { launch, offlinePage, login } from './drive.mjs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { readFileSync } from 'node:fs';

const [berth, user, password, shots] = process.argv.slice(2);
// Evaluated through the driver, not added as a <script>: the page's
// Content-Security-Policy stays in force for everything the page runs.
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const out = { violations: [], shots: [], pages: {} };

const browser = await launch();

// axe on the page as it is now, then a screenshot per theme.
async function check(page, name) {
  for (const scheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme: scheme });
    if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(axeSource);
    const result = await page.evaluate(() => axe.run(document, { resultTypes: ['violations'] }));
    for (const v of result.violations) {
      if (v.impact === 'serious' || v.impact === 'critical') {
        out.violations.push({ page: name, scheme, id: v.id, impact: v.impact, help: v.help,
          nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) });
      }
    }
    const file = path.join(shots, `${name}-${scheme}.png`);
    await page.screenshot({ path: file, fullPage: true });
    out.shots.push(file);
  }
  await page.emulateMedia({ colorScheme: 'light' });
}

const rowNames = (page) => page.$$eval('#results tbody th', (ths) => ths.map((t) => t.textContent.trim()));

try {
  const { context, page } = await offlinePage(browser, { viewport: { width: 1100, height: 800 } });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: berth });
  page.on('pageerror', (e) => { out.script_errors = (out.script_errors ?? []).concat(String(e)); });

  // Anonymous: public repositories only.
  await page.goto(`${berth}/`);
  out.anonymous_repos = await rowNames(page);
  await check(page, 'repositories');

  // Search as you type: no submit, the list follows the input.
  await page.fill('#q', 'web');
  await page.waitForFunction(() => [...document.querySelectorAll('#results tbody th')].map((t) => t.textContent.trim()).join() === 'public/web');
  out.search_web = await rowNames(page);
  out.search_url = page.url();
  await page.fill('#q', 'nothing-like-this');
  await page.waitForSelector('#results .empty');
  out.search_none = (await page.textContent('#results .empty')).trim();

  // The repository page: filter, copy.
  await page.goto(`${berth}/ui/r/public/web`);
  await check(page, 'repository');
  await page.fill('#filter', '1.1');
  await page.waitForFunction(() => document.querySelectorAll('#results tbody tr').length === 1);
  out.filtered_tags = await rowNames(page);
  await page.click('#pull-docker + button.copy');
  await page.waitForFunction(() => document.querySelector('#pull-docker + button.copy').textContent === 'Copied');
  out.copied = await page.evaluate(() => navigator.clipboard.readText());
  out.pull_docker = (await page.textContent('#pull-docker')).trim();

  // Compare through its form.
  await page.goto(`${berth}/ui/r/public/web/-/compare`);
  await check(page, 'compare-form');
  await page.fill('#a', '1.0');
  await page.fill('#b', '1.1');
  await page.click('form.bar button[type=submit]');
  await page.waitForSelector('#layers');
  out.compare_changes = await page.$$eval('#layers tbody tr', (rows) => rows.map((r) => r.className));
  out.compare_delta = (await page.textContent('#delta')).trim();
  await check(page, 'compare');

  // The image page.
  await page.goto(`${berth}/ui/r/public/web/-/image/1.1`);
  out.image_has_history = (await page.textContent('main')).includes('ENTRYPOINT');
  await check(page, 'image');

  // The keyboard: the first Tab reaches the skip link, which moves focus to
  // the content.
  await page.keyboard.press('Tab');
  out.first_tab = await page.evaluate(() => document.activeElement.textContent);
  await page.keyboard.press('Enter');
  out.after_skip = await page.evaluate(() => document.activeElement.id);

  // With JavaScript off, browsing still works: a GET form and links.
  const nojs = await offlinePage(browser, { javaScriptEnabled: false });
  await nojs.page.goto(`${berth}/`);
  await nojs.page.fill('#q', 'web');
  await nojs.page.click('form.bar button[type=submit]');
  await nojs.page.waitForURL(/q=web/);
  out.nojs_search = await rowNames(nojs.page);
  await nojs.page.click('#results a[href="/ui/r/public/web"]');
  await nojs.page.click('a[href="/ui/r/public/web/-/image/1.1"]');
  out.nojs_image = (await nojs.page.textContent('main')).includes('Layers');
  out.nojs_copy_hidden = await nojs.page.locator('button.copy').first().isHidden();
  await nojs.context.close();

  // A private repository is not there, even by address.
  const hidden = await page.goto(`${berth}/ui/r/private/secret`);
  out.private_anonymous_status = hidden.status();

  // Log in through the provider's page.
  out.who = await login(page, berth, user, password);
  out.member_repos = await rowNames(page);
  await check(page, 'repositories-signed-in');

  // Delete with confirmation: cancel first, then delete the tag.
  await page.goto(`${berth}/ui/r/private/secret`);
  await check(page, 'repository-private');
  await page.click('button.delete[data-tag="old"]');
  await page.waitForSelector('#confirm[open]');
  out.confirm_text = (await page.textContent('#confirm-text')).trim();
  await page.screenshot({ path: path.join(shots, 'delete-confirm-light.png') });
  await page.click('#delete-cancel');
  await page.waitForSelector('#confirm:not([open])', { state: 'attached' });
  out.tags_after_cancel = await rowNames(page);
  await page.click('button.delete[data-tag="old"]');
  await page.click('#delete-tag');
  await page.waitForFunction(() => ![...document.querySelectorAll('#results tbody th')].some((t) => t.textContent.trim() === 'old'));
  out.tags_after_delete = await rowNames(page);
  // The manifest, with every tag on it.
  await page.click('button.delete[data-tag="keep"]');
  await page.click('#delete-manifest');
  // Its last manifest gone, the repository may be gone too: then the
  // script goes back to the list.
  await page.waitForFunction(() => location.pathname === '/'
    || document.querySelectorAll('#results tbody th').length === 0
    || document.getElementById('confirm-error').textContent !== '');
  out.manifest_delete_error = page.url().endsWith('/') ? '' : (await page.textContent('#confirm-error'));
  out.after_manifest_delete = new URL(page.url()).pathname;

  // Account: API key create and revoke.
  await page.goto(`${berth}/ui/account`);
  await page.fill('#label', 'browser-key');
  await page.click('#create button');
  await page.waitForSelector('#secret');
  out.key = (await page.textContent('#secret')).trim();
  await page.waitForFunction(() => document.querySelectorAll('#keys tr').length === 1);
  await check(page, 'account');
  await page.click('#keys button');
  await page.waitForFunction(() => document.querySelectorAll('#keys tr').length === 0);
  out.keys_after_revoke = await page.locator('#keys tr').count();

  // A phone-sized screen.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${berth}/ui/r/public/web`);
  await check(page, 'repository-phone');
  await page.setViewportSize({ width: 1100, height: 800 });

  await page.click('#logout');
  await page.waitForSelector('a.login');
  await page.goto(`${berth}/`);
  out.after_logout_repos = await rowNames(page);
} catch (e) {
  out.error = String(e.stack ?? e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
