/**
 * Runs the benchmarks: every `bench/*.ts` file but this one, in turn, each in its own process, or
 * only those named. Arguments after the names are handed to each benchmark.
 *
 *   npm run bench                          every benchmark
 *   npm run bench -- lmtp                  bench/lmtp.ts only
 *   npm run bench -- lmtp --messages 5000  with its own options
 */
import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const BENCH = dirname(fileURLToPath(import.meta.url))
const ROOT = join(BENCH, '..')

const available = readdirSync(BENCH)
  .filter((f) => f.endsWith('.ts') && f !== basename(fileURLToPath(import.meta.url)))
  .map((f) => f.slice(0, -3))
  .sort()

const argv = process.argv.slice(2)
const firstOption = argv.findIndex((a) => a.startsWith('-'))
const names = firstOption === -1 ? argv : argv.slice(0, firstOption)
const passThrough = firstOption === -1 ? [] : argv.slice(firstOption)

for (const name of names) {
  if (!available.includes(name.replace(/\.ts$/, ''))) {
    console.error(`unknown benchmark ${JSON.stringify(name)}; available: ${available.join(', ')}`)
    process.exit(2)
  }
}
const selected = names.length > 0 ? names.map((n) => n.replace(/\.ts$/, '')) : available

const failed: string[] = []
for (const name of selected) {
  console.log(`\n=== bench/${name}.ts ${passThrough.join(' ')}`.trimEnd())
  const child = spawn(process.execPath, ['--import', 'tsx', join(BENCH, `${name}.ts`), ...passThrough], { cwd: ROOT, stdio: 'inherit' })
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c, signal) => resolve(signal ? 128 : c)))
  if (code !== 0) failed.push(`${name} (exit ${code})`)
}
if (failed.length > 0) {
  console.error(`\nbenchmarks that failed or missed their targets: ${failed.join(', ')}`)
  process.exitCode = 1
}
