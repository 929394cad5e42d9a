/**
 * The dashboard in a real headless Chromium (Debian's `chromium`, driven by playwright-core):
 * log in, see dead letters, retry one and the rest in bulk against a webhook that has recovered
 * and see them delivered, open a delivery with its attempts, pause a route and see the next RCPT
 * get 451. `UPDATE_SCREENSHOTS=1` also writes the screenshots shown in docs/admin.md.
 */
import t from 'tap'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser, type Page } from 'playwright-core'
import { converse } from '../helpers/lmtp.js'
import { webhook } from '../helpers/app.js'
import { message, rcptReply } from '../helpers/replicas.js'
import { TOKEN, startAdmin, until } from './helpers.js'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const SCREENSHOTS = process.env.UPDATE_SCREENSHOTS === '1'
const image = (name: string) => fileURLToPath(new URL(`../../docs/images/${name}`, import.meta.url))

async function launch(t: { teardown: (fn: () => unknown) => void }): Promise<Browser> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
  })
  t.teardown(() => browser.close())
  return browser
}

/** Clicks Refresh until `count` elements match `selector` (the page also refreshes itself every 5 s). */
async function refreshUntil(page: Page, selector: string, count: number, ms = 15_000): Promise<void> {
  await until(
    `${count} × ${selector}`,
    async () => {
      if ((await page.locator(selector).count()) === count) return true
      await page.click('#refresh')
      await page.waitForTimeout(200)
      return (await page.locator(selector).count()) === count
    },
    ms,
  )
}

t.test('the dashboard: log in, replay dead letters, read a delivery, pause a route', async (t) => {
  let healed = false
  const support = await webhook(t, 200)
  const archive = await webhook(t, (_req, _body, res) => {
    res.statusCode = healed ? 200 : 503
    res.end(healed ? 'stored' : 'archive offline')
  })
  const crm = await webhook(t, 503)
  const { api, base, lmtpPort } = await startAdmin(t, { ALLOW_ACCEPT_WITHOUT_AOF: 'true', REPLY_TIMEOUT: '1s' })
  for (const payload of [
    { id: 'support', match: 'support@example.com', url: support.url, concurrency: 8 },
    {
      id: 'archive',
      match: 'archive@example.com',
      url: archive.url,
      mode: 'accept',
      retry: { attempts: 2, backoff: '100ms', maxDelay: '200ms' },
      circuitBreaker: false,
    },
    { id: 'crm', match: 'crm@example.com', url: crm.url, circuitBreaker: { failures: 2, coolDown: '10m' } },
  ]) {
    t.equal((await api({ method: 'POST', url: '/v1/routes', payload })).statusCode, 201)
  }
  for (let i = 0; i < 3; i++) await converse(lmtpPort!, message(['support@example.com'], `<s${i}@x.test>`, 'customer@x.test'))
  for (let i = 0; i < 2; i++) await converse(lmtpPort!, message(['crm@example.com'], `<c${i}@x.test>`, 'lead@x.test'))
  for (let i = 0; i < 2; i++) await converse(lmtpPort!, message(['archive@example.com'], `<a${i}@x.test>`, 'records@x.test'))
  await until('two dead letters', async () => (await api({ method: 'GET', url: '/v1/deliveries?state=dead' })).json().deliveries.length === 2)

  // The page itself is public and holds no data.
  const html = await fetch(`${base}/ui`)
  t.equal(html.status, 200, 'served without a token')
  t.match(html.headers.get('content-type'), /^text\/html/)
  t.match(html.headers.get('content-security-policy'), /default-src 'none'; script-src 'self'/)
  const text = await html.text()
  for (const data of ['archive', 'support@example.com', 'crm']) t.notMatch(text, data, `the page holds no data (${data})`)
  t.equal((await fetch(`${base}/ui/app.js`)).status, 200)
  t.equal((await fetch(`${base}/v1/routes`)).status, 401, 'the API still needs the token')

  const browser = await launch(t)
  const page = await browser.newPage({ viewport: { width: 1320, height: 760 } })
  const requests: { url: string; authorization: string | undefined }[] = []
  page.on('request', (r) => requests.push({ url: r.url(), authorization: r.headers().authorization }))
  page.on('dialog', (d) => void (d.type() === 'prompt' ? d.accept('webhook migration') : d.accept()))
  const errors: string[] = []
  page.on('pageerror', (e) => errors.push(e.message))

  await page.goto(`${base}/ui`)
  await page.fill('#token', 'not-the-token-0000000')
  await page.click('#login button[type=submit]')
  await page.waitForSelector('#login-error:not([hidden])')
  t.match(await page.textContent('#login-error'), /not valid/, 'a wrong token is refused')
  await page.fill('#token', TOKEN)
  await page.click('#login button[type=submit]')
  await page.waitForSelector('tr[data-route="archive"]')
  t.match(await page.textContent('tr[data-route="crm"]'), /open/, 'the open circuit shows')
  t.match(await page.textContent('tr[data-route="support"]'), /100 %/, 'the success rate of the last hour shows')

  await page.click('button[data-tab="dead"]')
  await page.waitForSelector('#dead-rows tr[data-recipient="archive@example.com"]')
  t.equal(await page.locator('#dead-rows tr[data-recipient]').count(), 2, 'both dead letters are listed')
  t.match(await page.textContent('#dead-rows'), /webhook answered 503/)

  healed = true
  await page.locator('#dead-rows tr[data-recipient] button[data-action="retry"]').first().click()
  await until('one replay', () => archive.requests.length === 5)
  await refreshUntil(page, '#dead-rows tr[data-recipient]', 1)
  await page.click('#bulk-retry')
  await page.waitForSelector('#bulk-result:not([hidden])')
  t.match(await page.textContent('#bulk-result'), /^1 matched, 1 retried\./, 'the rest is retried in bulk')

  await page.click('button[data-tab="deliveries"]')
  await refreshUntil(page, '#delivery-rows tr[data-recipient="archive@example.com"][data-state="delivered"]', 2)
  t.equal(archive.requests.length, 6, 'each dead letter reached the recovered webhook once more')

  await page.locator('#delivery-rows tr[data-recipient="archive@example.com"]').first().click()
  await page.waitForSelector('dialog#detail[open]')
  t.equal(await page.locator('#attempt-rows tr').count(), 3, 'the delivery shows its three attempts')
  t.match(await page.textContent('#attempt-rows'), /archive offline[\s\S]*stored/)
  t.match(await page.textContent('#detail-fields'), /records@x\.test/)
  if (SCREENSHOTS) await page.screenshot({ path: image('dashboard-delivery.png') })
  await page.click('dialog#detail button.close')

  await page.click('button[data-tab="routes"]')
  await page.click('tr[data-route="support"] button[data-action="pause"]')
  await page.waitForSelector('tr[data-route="support"] button[data-action="resume"]')
  t.match(await page.textContent('tr[data-route="support"]'), /paused webhook migration/)
  t.match(await rcptReply(lmtpPort!, 'support@example.com'), /^451 4\.3\.2 /, 'the next RCPT to the paused route gets 451')
  if (SCREENSHOTS) {
    const box = (await page.locator('section#routes').boundingBox())!
    await page.screenshot({ path: image('dashboard-routes.png'), clip: { x: 0, y: 0, width: 1320, height: Math.ceil(box.y + box.height + 24) } })
  }

  const api_ = requests.filter((r) => new URL(r.url).pathname.startsWith('/v1/'))
  t.ok(api_.length > 5, `the page made API calls (${api_.length})`)
  t.ok(
    api_.every((r) => r.authorization === `Bearer ${TOKEN}` || r.authorization === 'Bearer not-the-token-0000000'),
    'every API call carries the token as a bearer header',
  )
  t.same(
    requests.filter((r) => !r.url.startsWith(base)),
    [],
    'nothing is loaded from outside the service',
  )
  t.same(errors, [], 'no script errors')
})
