// The operator page of lmtp-webhook. Plain browser JavaScript, no build step, no dependency:
// everything it shows comes from the admin API, with the token as a bearer header. It never
// writes server data into HTML: every value goes through textContent.

const TOKEN_KEY = 'lmtp-webhook-admin-token'
const REFRESH_MS = 5000

const $ = (id) => document.getElementById(id)
const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  tab: 'routes',
  routes: [],
  cursors: { deliveries: null, dead: null },
  timer: null,
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`)
    this.status = status
    this.code = body?.error?.code
  }
}

/** One admin API call, relative to this page (so it works behind a path prefix too). */
async function api(method, path, body) {
  const headers = { authorization: `Bearer ${state.token}` }
  if (body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(new URL(path, document.baseURI), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  const text = await res.text()
  const data = text === '' ? null : JSON.parse(text)
  if (res.status === 401) {
    logout('The token was refused.')
    throw new ApiError(401, data)
  }
  if (!res.ok) throw new ApiError(res.status, data)
  return data
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v)
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? '' : String(v))
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : document.createTextNode(String(c)))
  return node
}

const badge = (text, kind) => el('span', { class: `badge ${kind}` }, text)

/** A time as "5 s ago" or "in 9 min", with the exact time as its title. */
function ago(iso) {
  if (!iso) return '–'
  const delta = Math.round((Date.now() - Date.parse(iso)) / 1000)
  const s = Math.abs(delta)
  const span = s < 60 ? `${s} s` : s < 3600 ? `${Math.round(s / 60)} min` : s < 86400 ? `${Math.round(s / 3600)} h` : null
  const text = span === null ? iso.slice(0, 10) : delta >= 0 ? `${span} ago` : `in ${span}`
  return el('time', { datetime: iso, title: iso }, text)
}

function notice(text, kind = 'info') {
  const n = $('notice')
  n.textContent = text
  n.className = kind
  n.hidden = text === ''
}

// ---- session -----------------------------------------------------------------------------

async function login(token) {
  state.token = token
  try {
    await api('GET', 'v1/routes')
  } catch (err) {
    state.token = null
    $('login-error').textContent = err.status === 401 ? 'This token is not valid.' : `The admin API did not answer: ${err.message}`
    $('login-error').hidden = false
    return
  }
  sessionStorage.setItem(TOKEN_KEY, token)
  $('login').hidden = true
  $('tabs').hidden = false
  $('session').hidden = false
  $('login-error').hidden = true
  show(state.tab)
  schedule()
}

function logout(message) {
  state.token = null
  sessionStorage.removeItem(TOKEN_KEY)
  clearTimeout(state.timer)
  for (const id of ['tabs', 'session', 'routes', 'deliveries', 'dead']) $(id).hidden = true
  $('login').hidden = false
  $('token').value = ''
  $('login-error').textContent = message ?? ''
  $('login-error').hidden = !message
}

function schedule() {
  clearTimeout(state.timer)
  state.timer = setTimeout(async () => {
    if (state.token && $('auto-refresh').checked && !$('detail').open) await refresh().catch(() => undefined)
    if (state.token) schedule()
  }, REFRESH_MS)
}

function show(tab) {
  state.tab = tab
  for (const b of document.querySelectorAll('#tabs button')) b.setAttribute('aria-pressed', String(b.dataset.tab === tab))
  for (const id of ['routes', 'deliveries', 'dead']) $(id).hidden = id !== tab
  refresh().catch((err) => notice(err.message, 'error'))
}

async function refresh() {
  await loadRoutes()
  if (state.tab === 'deliveries') await loadList('deliveries', false)
  if (state.tab === 'dead') await loadList('dead', false)
}

// ---- routes ------------------------------------------------------------------------------

function circuitBadge(route) {
  if (route.circuitBreaker === null) return badge('off', 'muted')
  const c = route.health.circuit
  return badge(c, c === 'closed' ? 'ok' : c === 'open' ? 'bad' : 'warn')
}

function lastAttempt(h) {
  if (!h.lastAttemptAt) return '–'
  const what = h.lastStatus !== null ? String(h.lastStatus) : (h.lastError ?? '?')
  const ok = h.lastStatus !== null && h.lastStatus < 300
  return el('span', {}, badge(what, ok ? 'ok' : 'bad'), ' ', ago(h.lastAttemptAt))
}

function successRate(h) {
  const { attempts, successRate } = h.lastHour
  if (attempts === 0) return '–'
  const pct = Math.round(successRate * 1000) / 10
  return el('span', { class: pct >= 99 ? 'ok-text' : pct >= 90 ? 'warn-text' : 'bad-text' }, `${pct} %`, el('small', {}, ` of ${attempts}`))
}

async function loadRoutes() {
  const { routes } = await api('GET', 'v1/routes')
  state.routes = routes
  const rows = routes.map((r) => {
    const h = r.health
    const action = h.paused
      ? el('button', { type: 'button', 'data-action': 'resume', 'data-route': r.id, onclick: () => resume(r.id) }, 'Resume')
      : el('button', { type: 'button', 'data-action': 'pause', 'data-route': r.id, onclick: () => pause(r.id) }, 'Pause')
    return el(
      'tr',
      { 'data-route': r.id },
      el('td', {}, el('strong', {}, r.id), r.source === 'file' ? el('small', {}, ' file') : null),
      el('td', {}, el('code', {}, r.match)),
      el('td', {}, r.mode),
      el('td', {}, circuitBadge(r), h.circuit === 'open' && h.circuitOpenUntil ? el('small', {}, ' probes ', ago(h.circuitOpenUntil)) : null),
      el('td', {}, h.paused ? badge('paused', 'warn') : '–', h.pauseReason ? el('small', {}, ` ${h.pauseReason}`) : null),
      el('td', {}, lastAttempt(h)),
      el('td', {}, successRate(h)),
      el('td', {}, r.concurrency === undefined ? String(h.inFlight) : `${h.inFlight} / ${r.concurrency}`),
      el('td', {}, action),
    )
  })
  $('route-rows').replaceChildren(...(rows.length > 0 ? rows : [el('tr', {}, el('td', { colspan: 9 }, 'No routes.'))]))
  for (const select of document.querySelectorAll('.route-select')) {
    const current = select.value
    select.replaceChildren(el('option', { value: '' }, 'any'), ...routes.map((r) => el('option', { value: r.id }, r.id)))
    select.value = current
  }
}

async function pause(id) {
  const reason = prompt(`Pause route ${id}? Reason (optional):`)
  if (reason === null) return
  await act(() => api('POST', `v1/routes/${encodeURIComponent(id)}/pause`, reason === '' ? {} : { reason }), `Route ${id} paused.`)
  await loadRoutes()
}

async function resume(id) {
  await act(() => api('POST', `v1/routes/${encodeURIComponent(id)}/resume`, {}), `Route ${id} resumed.`)
  await loadRoutes()
}

async function act(call, done) {
  try {
    await call()
    notice(done)
  } catch (err) {
    notice(err.message, 'error')
  }
}

// ---- deliveries and dead letters ---------------------------------------------------------

function filterQuery(list) {
  const form = document.querySelector(`form.filters[data-list="${list}"]`)
  const params = new URLSearchParams()
  for (const [k, v] of new FormData(form)) {
    if (v === '') continue
    params.set(k, k === 'since' || k === 'until' ? new Date(v).toISOString() : v)
  }
  if (list === 'dead') params.set('state', 'dead')
  return params
}

const stateBadge = (s) => badge(s, s === 'delivered' ? 'ok' : s === 'dead' || s === 'rejected' ? 'bad' : 'warn')

function deliveryRow(d) {
  return el(
    'tr',
    { class: 'clickable', 'data-id': d.id, 'data-recipient': d.recipient, 'data-state': d.state, onclick: () => openDelivery(d.id) },
    el('td', {}, ago(d.createdAt)),
    el('td', {}, d.recipient),
    el('td', {}, d.sender === null ? '–' : d.sender === '' ? '<>' : d.sender),
    el('td', {}, d.route),
    el('td', {}, stateBadge(d.state)),
    el('td', {}, String(d.attempts)),
    el('td', {}, d.lastStatus ?? d.lastError ?? '–'),
    el('td', {}, d.reply ?? '–'),
  )
}

function deadRow(d) {
  const stop = (fn) => (e) => {
    e.stopPropagation()
    fn()
  }
  return el(
    'tr',
    { class: 'clickable', 'data-id': d.id, 'data-recipient': d.recipient, onclick: () => openDelivery(d.id) },
    el('td', {}, ago(d.createdAt)),
    el('td', {}, d.recipient),
    el('td', {}, d.route),
    el('td', {}, String(d.attempts)),
    el('td', {}, d.reason ?? '–'),
    el(
      'td',
      { class: 'actions' },
      el('button', { type: 'button', 'data-action': 'retry', onclick: stop(() => retryOne(d.id)) }, 'Retry'),
      el('button', { type: 'button', class: 'danger', 'data-action': 'delete', onclick: stop(() => deleteOne(d.id)) }, 'Delete'),
    ),
  )
}

async function loadList(list, more) {
  const params = filterQuery(list)
  params.set('limit', '50')
  if (more && state.cursors[list]) params.set('cursor', state.cursors[list])
  const page = await api('GET', `v1/deliveries?${params}`)
  state.cursors[list] = page.nextCursor
  const body = $(list === 'dead' ? 'dead-rows' : 'delivery-rows')
  const rows = page.deliveries.map(list === 'dead' ? deadRow : deliveryRow)
  if (more) body.append(...rows)
  else body.replaceChildren(...(rows.length > 0 ? rows : [el('tr', {}, el('td', { colspan: 8 }, 'Nothing matches.'))]))
  document.querySelector(`button.more[data-list="${list}"]`).hidden = page.nextCursor === null
}

async function retryOne(id) {
  await act(() => api('POST', `v1/deliveries/${encodeURIComponent(id)}/retry`), 'Queued again: it is attempted now.')
  await refresh()
}

async function deleteOne(id) {
  if (!confirm('Delete this delivery? It will never be attempted again.')) return
  await act(() => api('DELETE', `v1/deliveries/${encodeURIComponent(id)}`), 'Deleted.')
  if ($('detail').open) $('detail').close()
  await refresh()
}

/** Bulk retry or delete of what the dead-letter filters match, following the cursor to the end. */
async function bulk(kind) {
  const params = filterQuery('dead')
  const filter = {}
  for (const k of ['route', 'recipient', 'since', 'until']) if (params.has(k)) filter[k] = params.get(k)
  const what = Object.keys(filter).length === 0 ? 'every dead letter' : 'the dead letters matching the filters'
  if (!confirm(`${kind === 'retry' ? 'Retry' : 'Delete'} ${what}?`)) return
  let matched = 0
  let done = 0
  const skipped = []
  let cursor = null
  try {
    for (let calls = 0; calls < 100; calls++) {
      const r = await api('POST', `v1/deliveries/${kind}`, { ...filter, ...(cursor ? { cursor } : {}) })
      matched += r.matched
      done += kind === 'retry' ? r.retried : r.deleted
      skipped.push(...r.skipped)
      cursor = r.nextCursor
      if (cursor === null) break
    }
  } catch (err) {
    notice(err.message, 'error')
  }
  const result = $('bulk-result')
  result.textContent = `${matched} matched, ${done} ${kind === 'retry' ? 'retried' : 'deleted'}${skipped.length > 0 ? `, ${skipped.length} left as they were (${skipped[0].message})` : ''}.`
  result.hidden = false
  await refresh()
}

async function openDelivery(id) {
  let d
  try {
    d = await api('GET', `v1/deliveries/${encodeURIComponent(id)}`)
  } catch (err) {
    notice(err.message, 'error')
    return
  }
  const fields = [
    ['Id', d.id],
    ['Recipient', d.recipient],
    ['Sender', d.sender === null ? '–' : d.sender === '' ? '<>' : d.sender],
    ['Message-ID', d.messageId ?? '–'],
    ['Route', d.route],
    ['Mode', d.mode],
    ['State', stateBadge(d.state)],
    ['In the queue', d.queueState ?? '–'],
    ['Transaction', d.txn],
    ['Created', d.createdAt],
    ['Updated', d.updatedAt],
    ['Reason', d.reason ?? '–'],
  ]
  $('detail-fields').replaceChildren(...fields.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]))
  const actions =
    d.queueState === 'failed'
      ? [el('button', { type: 'button', 'data-action': 'retry', onclick: () => retryOne(d.id).then(() => openDelivery(d.id)) }, 'Retry')]
      : []
  if (d.queueState !== 'active')
    actions.push(el('button', { type: 'button', class: 'danger', 'data-action': 'delete', onclick: () => deleteOne(d.id) }, 'Delete'))
  $('detail-actions').replaceChildren(...actions)
  $('attempt-rows').replaceChildren(
    ...d.attemptLog.map((a) =>
      el(
        'tr',
        {},
        el('td', {}, String(a.attempt)),
        el('td', {}, a.at),
        el('td', {}, a.status ?? '–'),
        el('td', {}, a.error ?? '–'),
        el('td', {}, `${Math.round(a.durationMs)} ms`),
        el('td', {}, a.reply),
        el('td', {}, el('code', {}, a.response)),
      ),
    ),
  )
  if (!$('detail').open) $('detail').showModal()
}

// ---- wiring ------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('login').addEventListener('submit', (e) => {
    e.preventDefault()
    void login($('token').value.trim())
  })
  $('logout').addEventListener('click', () => logout())
  $('refresh').addEventListener('click', () => refresh().catch((err) => notice(err.message, 'error')))
  for (const b of document.querySelectorAll('#tabs button')) b.addEventListener('click', () => show(b.dataset.tab))
  for (const form of document.querySelectorAll('form.filters')) {
    form.addEventListener('submit', (e) => {
      e.preventDefault()
      loadList(form.dataset.list, false).catch((err) => notice(err.message, 'error'))
    })
  }
  for (const b of document.querySelectorAll('button.more'))
    b.addEventListener('click', () => loadList(b.dataset.list, true).catch((err) => notice(err.message, 'error')))
  $('bulk-retry').addEventListener('click', () => void bulk('retry'))
  $('bulk-delete').addEventListener('click', () => void bulk('delete'))
  if (state.token) void login(state.token)
})
