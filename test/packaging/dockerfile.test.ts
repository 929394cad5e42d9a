/**
 * The Dockerfile's contract, read the way `docker build` reads it (no engine exists here):
 * a build stage that compiles, a node:24 slim runtime stage with production dependencies only,
 * a fixed non-root uid shared with the chart and compose, tini as PID 1, /tmp as the only
 * writable place, and a build context (.dockerignore) holding what the COPY lines need and
 * nothing more.
 */
import t from 'tap'
import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT, dockerignore, listFiles, parseDockerfile, readText, readYaml, words, type Instruction, type Stage } from './helpers.js'

const stages = parseDockerfile(readText('Dockerfile'))
const runtime = stages[stages.length - 1] as Stage
const pkg = JSON.parse(readText('package.json')) as { main: string; license: string }

function all(stage: Stage, keyword: string): Instruction[] {
  return stage.instructions.filter((i) => i.keyword === keyword)
}

function last(stage: Stage, keyword: string): Instruction | undefined {
  return all(stage, keyword).at(-1)
}

/** KEY=value pairs of ENV/LABEL instructions (quoted values allowed). */
function pairs(stage: Stage, keyword: string): Map<string, string> {
  const out = new Map<string, string>()
  for (const ins of all(stage, keyword)) {
    for (const m of ins.args.matchAll(/([\w.-]+)=("(?:[^"\\]|\\.)*"|\S+)/g)) {
      const raw = m[2] ?? ''
      out.set(m[1] ?? '', raw.startsWith('"') ? (JSON.parse(raw) as string) : raw)
    }
  }
  return out
}

/** The uid:gid of the runtime stage's last USER line. */
function runtimeUser(): { uid: number; gid: number | null } {
  const user = last(runtime, 'USER')?.args ?? ''
  const m = /^(\d+)(?::(\d+))?$/.exec(user)
  if (!m) throw new Error(`USER must be a numeric uid[:gid], got ${JSON.stringify(user)}`)
  return { uid: Number(m[1]), gid: m[2] === undefined ? null : Number(m[2]) }
}

t.test('multi-stage: a build stage compiles with dev dependencies', async (t) => {
  t.ok(stages.length >= 2, 'at least a build and a runtime stage')
  const build = stages.find((s) => s.name === 'build')
  t.ok(build, 'a stage named build')
  const runs = all(build as Stage, 'RUN').map((i) => i.args)
  t.ok(
    runs.some((r) => /\bnpm ci\b/.test(r) && !/--omit=dev/.test(r)),
    'build installs all dependencies with npm ci',
  )
  t.ok(
    runs.some((r) => /\bnpm run build\b/.test(r)),
    'build runs npm run build',
  )
  const copied = all(runtime, 'COPY')
    .filter((c) => c.args.includes('--from=build'))
    .map((c) => c.args)
  t.ok(
    copied.some((c) => /\/app\/dist\s+\.\/dist$/.test(c)),
    'the runtime takes dist/ from the build stage',
  )
  t.notOk(
    copied.some((c) => /node_modules/.test(c)),
    'the runtime never takes the build stage node_modules (dev dependencies)',
  )
})

t.test('the runtime stage is node 24 slim with production dependencies only', async (t) => {
  t.match(runtime.from, /^node:24(\.\d+)*-(bookworm|trixie)-slim$/, 'FROM node:24 Debian slim')
  const runs = all(runtime, 'RUN').map((i) => i.args)
  const installs = runs.filter((r) => /\bnpm (ci|install|i)\b/.test(r))
  t.equal(installs.length, 1, 'one npm install in the runtime stage')
  t.match(installs[0], /\bnpm ci\b.*--omit=dev/, 'npm ci --omit=dev')
  t.ok(
    runs.some((r) => /apt-get install[^&]*\btini\b/.test(r)),
    'tini from apt',
  )
  t.match(last(runtime, 'ENTRYPOINT')?.args ?? '', /^\["\/usr\/bin\/tini", "--"\]$/, 'tini is PID 1')
  const cmd = words(last(runtime, 'CMD')?.args ?? '')
  t.same(cmd, ['node', pkg.main], `CMD runs node ${pkg.main} (package.json main)`)
  t.equal(last(runtime, 'STOPSIGNAL')?.args, 'SIGTERM')
})

t.test('the runtime runs as a fixed non-root uid with a writable /tmp only', async (t) => {
  const user = runtimeUser()
  t.ok(user.uid > 0, `uid ${user.uid} is not root`)
  t.ok(user.gid !== null && user.gid > 0, 'gid is fixed and not root')
  const userIndex = runtime.instructions.indexOf(last(runtime, 'USER') as Instruction)
  t.notOk(
    runtime.instructions.slice(userIndex).some((i) => i.keyword === 'RUN'),
    'nothing runs after USER',
  )
  t.ok(
    all(runtime, 'RUN').some((r) => r.args.includes(`--uid ${user.uid}`) && r.args.includes(`--gid ${user.gid}`)),
    'the user exists in /etc/passwd with that uid and gid',
  )
  t.equal(pairs(runtime, 'ENV').get('TMPDIR'), '/tmp')
  t.same(
    all(runtime, 'VOLUME').map((v) => v.args),
    ['/tmp'],
    'VOLUME /tmp and nothing else',
  )
  t.notOk(
    all(runtime, 'COPY').some((c) => /--chown/.test(c.args)),
    'application files stay owned by root (read-only for the service)',
  )
})

t.test('EXPOSE 2424 (LMTP) and 8080 (admin), matching the ENV defaults', async (t) => {
  const exposed = all(runtime, 'EXPOSE')
    .flatMap((e) => e.args.split(/\s+/))
    .map((p) => p.replace(/\/tcp$/, ''))
  t.same(exposed.sort(), ['2424', '8080'])
  const env = pairs(runtime, 'ENV')
  t.equal(env.get('LMTP_PORT'), '2424')
  t.equal(env.get('ADMIN_PORT'), '8080')
})

t.test('OCI labels', async (t) => {
  const labels = pairs(runtime, 'LABEL')
  for (const key of ['title', 'description', 'version', 'revision', 'created', 'licenses']) {
    t.ok(labels.get(`org.opencontainers.image.${key}`), `org.opencontainers.image.${key}`)
  }
  t.equal(labels.get('org.opencontainers.image.licenses'), pkg.license, 'licence matches package.json')
})

t.test('the uid is the one the chart and compose run as', async (t) => {
  const { uid, gid } = runtimeUser()
  const values = readYaml('helm', 'lmtp-webhook', 'values.yaml') as Record<string, Record<string, unknown>>
  for (const key of ['podSecurityContext', 'securityContext'] as const) {
    t.equal(values[key]?.runAsUser, uid, `${key}.runAsUser`)
    t.equal(values[key]?.runAsGroup, gid, `${key}.runAsGroup`)
  }
  const compose = readYaml('docker', 'compose.yaml') as { services: Record<string, { user?: string }> }
  t.equal(compose.services['lmtp-webhook']?.user, `${uid}:${gid}`, 'compose runs the service as the same uid:gid')
})

t.test('.dockerignore keeps the context to what COPY needs', async (t) => {
  const ignored = dockerignore(readText('.dockerignore'))
  const sources = stages
    .flatMap((s) => all(s, 'COPY'))
    .filter((c) => !c.args.includes('--from='))
    .flatMap((c) => words(c.args).slice(0, -1))
  t.ok(sources.includes('src'), 'src is copied')
  for (const source of new Set(sources)) {
    const path = join(ROOT, source)
    t.ok(existsSync(path), `${source} exists`)
    const files = statSync(path).isDirectory() ? listFiles(path) : [source]
    for (const file of files) t.notOk(ignored(file), `${file} is in the build context`)
  }
  for (const path of [
    'node_modules/yaml/package.json',
    'dist/main.js',
    '.git/HEAD',
    'test/packaging/chart.test.ts',
    'helm/lmtp-webhook/values.yaml',
    '.env',
    'docker/compose.yaml',
    'src/debug.log',
  ]) {
    t.ok(ignored(path), `${path} stays out of the build context`)
  }
})
