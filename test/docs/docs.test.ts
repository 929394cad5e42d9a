/**
 * The docs stay true to the code: every source file is in the layout of docs/architecture.md,
 * every variable src/config.ts reads is in the README's configuration table (and nothing else),
 * and nothing in the project points at files outside the repository.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const read = (path: string): string => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8')
const tracked = (...paths: string[]): string[] =>
  execFileSync('git', ['ls-files', '--', ...paths], { cwd: ROOT, encoding: 'utf8' })
    .split('\n')
    .filter((f) => f !== '')

t.test('docs/architecture.md lists every file under src/ and test/helpers/', async (t) => {
  const doc = read('docs/architecture.md')
  const layout = /## Layout\n\n```\n([\s\S]*?)```/.exec(doc)?.[1] ?? ''
  t.ok(layout.length > 0, 'the layout block is there')
  let dir = ''
  let sub = ''
  const listed = new Set<string>()
  for (const line of layout.split('\n')) {
    const top = /^(\S+)/.exec(line)
    if (top) {
      if (top[1]!.endsWith('/')) dir = top[1]!
      else listed.add(top[1]!)
      sub = ''
      continue
    }
    const folder = /^ {2}(\S+\/)(?:\s|$)/.exec(line)
    if (folder) {
      sub = folder[1]!
      continue
    }
    const nested = /^ {4}(\S+\.ts)\b/.exec(line)
    if (nested) listed.add(dir + sub + nested[1])
    const inner = /^ {2}(\S+\.ts)\b/.exec(line)
    if (inner) {
      sub = ''
      listed.add(dir + inner[1])
    }
  }
  for (const file of tracked('src', 'test/helpers')) t.ok(listed.has(file), `${file} is in the layout`)
  for (const file of listed) t.equal(tracked(file).length, 1, `${file} of the layout exists`)
})

t.test("the README's configuration table lists exactly the variables src/config.ts reads", async (t) => {
  const source = read('src/config.ts')
  const readByConfig = new Set([...source.matchAll(/\benv, '([A-Z][A-Z0-9_]*)'/g)].map((m) => m[1]!))
  const readme = read('README.md')
  const table = /## Configuration\n[\s\S]*?\n(\| variable[\s\S]*?)\n\n/.exec(readme)?.[1] ?? ''
  const rows = table.split('\n').slice(2)
  t.ok(rows.length > 10, 'the table is there')
  const documented = new Set(rows.flatMap((row) => [...(row.split('|')[1] ?? '').matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((m) => m[1]!)))
  for (const name of readByConfig) t.ok(documented.has(name), `${name} is in the README table`)
  for (const name of documented) t.ok(readByConfig.has(name), `${name} in the README table is read by src/config.ts`)
})

t.test('nothing refers to files outside the repository', async (t) => {
  const files = tracked('src', 'docs', 'test', 'bench', 'README.md', 'helm', 'docker', 'scripts', 'examples', 'openapi', '.ci', 'Dockerfile')
  // The names are assembled here, so this file does not name what it looks for.
  const notes = ['DESIGN', 'STYLE'].map((name) => `${name}\\.md`)
  const outside = new RegExp([...notes, ['\\.\\.', 'shared\\b'].join('/')].join('|'))
  const hits = files.filter((f) => outside.test(readFileSync(`${ROOT}/${f}`, 'utf8')))
  t.same(hits, [], 'no file names the design notes or the directory kept beside the repository')
})
