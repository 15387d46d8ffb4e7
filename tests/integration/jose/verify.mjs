// Verifies a lastcall deletion receipt (a compact JWS) with the npm package jose, independently of
// lastcall's own code: node verify.mjs RECEIPT_FILE JWKS_FILE. Prints the payload as JSON and
// exits 0 when the signature verifies against the JWKS key named by the header's kid; prints the
// error and exits 1 otherwise. Node 18 or later (Debian 12 ships 18).
import { readFileSync } from 'node:fs';
import { compactVerify, createLocalJWKSet } from 'jose';

const [receiptPath, jwksPath] = process.argv.slice(2);
if (!receiptPath || !jwksPath) {
  console.error('usage: node verify.mjs RECEIPT_FILE JWKS_FILE');
  process.exit(2);
}
const jws = readFileSync(receiptPath, 'utf8').trim();
const jwks = createLocalJWKSet(JSON.parse(readFileSync(jwksPath, 'utf8')));
try {
  const { payload, protectedHeader } = await compactVerify(jws, jwks, { algorithms: ['EdDSA'] });
  process.stdout.write(JSON.stringify({ header: protectedHeader,
                                        payload: JSON.parse(new TextDecoder().decode(payload)) }));
  process.exit(0);
} catch (e) {
  console.error(`${e.code || 'error'}: ${e.message}`);
  process.exit(1);
}
