#!/usr/bin/env node
// Validates lastcall's contracts with real validators from npm:
//   docs/openapi.yaml  -> `redocly lint` (@redocly/cli, rules in redocly.yaml beside this file)
//   docs/asyncapi.yaml -> the official AsyncAPI parser (@asyncapi/parser), which checks the
//                         document against the AsyncAPI 3.0 schema and its Spectral rule set
//                         (references, message examples against their payloads, ...).
// Any error or warning fails. Usage: node validate.js [openapi.yaml] [asyncapi.yaml]
// (defaults: the repository's docs/). Exit 0 when both are valid, 1 otherwise, 2 on usage.
// Runs on Node.js 18.17+ (Debian 12's nodejs) and later. Install first: `npm ci` in this folder.
'use strict';

const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const here = __dirname;
const root = path.resolve(here, '..', '..');
const args = process.argv.slice(2);
if (args.length > 2 || args.some((a) => a === '-h' || a === '--help')) {
  console.error('usage: node validate.js [openapi.yaml] [asyncapi.yaml]');
  process.exit(2);
}
const openapiPath = path.resolve(args[0] || path.join(root, 'docs', 'openapi.yaml'));
const asyncapiPath = path.resolve(args[1] || path.join(root, 'docs', 'asyncapi.yaml'));

// Neither tool may reach the network: no telemetry, no update check.
const quietEnv = Object.assign({}, process.env, {
  REDOCLY_TELEMETRY: 'off',
  REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true',
  NO_UPDATE_NOTIFIER: '1',
});

function lintOpenApi(file) {
  const cli = require.resolve('@redocly/cli/bin/cli.js', { paths: [here] });
  const r = spawnSync(
    process.execPath,
    [cli, 'lint', '--config', path.join(here, 'redocly.yaml'), '--max-problems', '1000', file],
    { env: quietEnv, encoding: 'utf8', timeout: 120000 },
  );
  process.stdout.write(r.stdout || '');
  process.stderr.write(r.stderr || '');
  if (r.error) {
    console.error(`openapi: could not run redocly: ${r.error.message}`);
    return false;
  }
  // redocly.yaml extends recommended-strict, where every rule is an error: a non-zero exit.
  if (r.status !== 0) {
    console.error(`openapi: ${file} is not valid (redocly exited ${r.status})`);
    return false;
  }
  console.log(`openapi: ${path.relative(root, file)} is valid (redocly lint)`);
  return true;
}

async function validateAsyncApi(file) {
  const { Parser } = require('@asyncapi/parser');
  const parser = new Parser();
  const text = fs.readFileSync(file, 'utf8');
  const { document, diagnostics } = await parser.parse(text, { source: file });
  // Spectral severities: 0 error, 1 warning, 2 information, 3 hint.
  const names = ['error', 'warning', 'info', 'hint'];
  let bad = 0;
  for (const d of diagnostics) {
    const where = d.range ? `${d.range.start.line + 1}:${d.range.start.character + 1}` : '?';
    const at = d.path && d.path.length ? ` at ${d.path.join('.')}` : '';
    console.log(`asyncapi: ${names[d.severity] || d.severity} ${where}${at}: ${d.message} (${d.code})`);
    if (d.severity <= 1) bad += 1;
  }
  if (!document || bad > 0) {
    console.error(`asyncapi: ${file} is not valid (${bad} errors or warnings)`);
    return false;
  }
  // The v3 rule set does not check message examples against their payloads: do it here, with
  // the payload schemas as the parser resolved them (AsyncAPI schemas are JSON Schema draft-07).
  const Ajv = require('ajv');
  const addFormats = require('ajv-formats');
  const ajv = new Ajv({ strict: false, allErrors: true });
  addFormats(ajv);
  for (const message of document.allMessages().all()) {
    const payload = message.payload();
    if (!payload) {
      console.error(`asyncapi: message ${message.id()} has no payload schema`);
      bad += 1;
      continue;
    }
    const validate = ajv.compile(payload.json());
    const examples = message.examples().all();
    if (examples.length === 0) {
      console.error(`asyncapi: message ${message.id()} has no example`);
      bad += 1;
    }
    for (const ex of examples) {
      if (!validate(ex.payload())) {
        console.error(`asyncapi: example ${ex.name() || '?'} of message ${message.id()} does not ` +
          `match its payload schema: ${ajv.errorsText(validate.errors)}`);
        bad += 1;
      }
    }
  }
  if (bad > 0) {
    console.error(`asyncapi: ${file} is not valid (${bad} problems with message examples)`);
    return false;
  }
  const channels = document.channels().all().map((c) => c.id()).sort();
  const messages = document.allMessages().all().length;
  console.log(
    `asyncapi: ${path.relative(root, file)} is valid (AsyncAPI ${document.version()}; ` +
      `channels ${channels.join(', ')}; ${messages} messages)`,
  );
  return true;
}

(async () => {
  let ok = true;
  for (const f of [openapiPath, asyncapiPath]) {
    if (!fs.existsSync(f)) {
      console.error(`missing: ${f}`);
      ok = false;
    }
  }
  if (!ok) process.exit(1);
  ok = lintOpenApi(openapiPath) && ok;
  try {
    ok = (await validateAsyncApi(asyncapiPath)) && ok;
  } catch (e) {
    console.error(`asyncapi: could not validate ${asyncapiPath}: ${e && e.stack ? e.stack : e}`);
    ok = false;
  }
  process.exit(ok ? 0 : 1);
})();
