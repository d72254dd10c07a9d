// Tokens as identity providers emit them, made by the `jose` library: for each of RS256 and
// ES256 a fresh key pair, its public JWK, and a token for the user named on the command line.
// Prints {"keys": [...], "tokens": {"RS256": "...", "ES256": "..."}} for the Rust test, which
// serves the keys as a JWKS and sends the tokens to TaskNest.
import { SignJWT, exportJWK, generateKeyPair } from "jose";

const [sub, issuer, audience] = process.argv.slice(2);
const keys = [];
const tokens = {};
for (const alg of ["RS256", "ES256"]) {
  const { publicKey, privateKey } = await generateKeyPair(alg);
  const jwk = await exportJWK(publicKey);
  const kid = `jose-${alg.toLowerCase()}`;
  keys.push({ ...jwk, kid, alg, use: "sig" });
  tokens[alg] = await new SignJWT({ name: `${sub} via jose ${alg}` })
    .setProtectedHeader({ alg, kid, typ: "JWT" })
    .setSubject(sub)
    .setIssuer(issuer)
    .setAudience(audience)
    .setIssuedAt()
    .setExpirationTime("10m")
    .sign(privateKey);
}
console.log(JSON.stringify({ keys, tokens }));
