// Verifies baton caller assertions with the npm package `jose`, the way an
// application would: the key set fetched from baton's JWKS URL, then the
// signature, `iss`, `aud`, `exp` and the explicit `typ` checked by jwtVerify.
// Input (stdin, JSON): {"jwks": URL, "issuer": ..., "audience": ..., "typ": ..., "tokens": [...]}
// Output (stdout, JSON): one {"ok": true, "payload", "header"} or {"ok": false, "code", "message"} per token.
import { createRemoteJWKSet, jwtVerify } from 'jose';

let input = '';
for await (const chunk of process.stdin) input += chunk;
const req = JSON.parse(input);
const keys = createRemoteJWKSet(new URL(req.jwks));
const out = [];
for (const token of req.tokens) {
  try {
    const { payload, protectedHeader } = await jwtVerify(token, keys, {
      issuer: req.issuer,
      audience: req.audience,
      typ: req.typ,
      algorithms: ['ES256'],
    });
    out.push({ ok: true, payload, header: protectedHeader });
  } catch (e) {
    out.push({ ok: false, code: e.code || 'ERROR', message: String(e.message) });
  }
}
process.stdout.write(JSON.stringify(out));
