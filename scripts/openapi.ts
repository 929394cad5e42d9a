/**
 * Writes openapi/openapi.yaml from the admin API's route schemas (`npm run openapi`).
 * `--check` writes nothing and exits 1 when the committed file differs.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { openapiDocument } from '../src/admin/server.js'
import { openapiYaml } from '../src/admin/openapi.js'

const target = fileURLToPath(new URL('../openapi/openapi.yaml', import.meta.url))
const text = openapiYaml(await openapiDocument())

if (process.argv.includes('--check')) {
  let current = ''
  try {
    current = readFileSync(target, 'utf8')
  } catch {
    // missing counts as different
  }
  if (current !== text) {
    process.stderr.write('openapi/openapi.yaml is out of date: run npm run openapi\n')
    process.exit(1)
  }
} else {
  writeFileSync(target, text)
  process.stdout.write(`wrote ${target}\n`)
}
