/** The webhook payload's JSON Schema, compiled once with ajv (draft 2020-12), as a consumer would use it. */
import { readFileSync } from 'node:fs'
import { Ajv2020 } from 'ajv/dist/2020.js'
import addFormatsModule from 'ajv-formats'

// ajv-formats is CommonJS: its plugin is the default export at run time, `.default` for the type checker
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as (ajv: Ajv2020) => void
export const ajv = new Ajv2020({ allErrors: true, strict: true })
addFormats(ajv)
export const validatePayload = ajv.compile(JSON.parse(readFileSync(new URL('../../openapi/webhook-payload.schema.json', import.meta.url), 'utf8')) as object)
