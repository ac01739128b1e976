'use strict';
// The bcrypt hash (cost 10) of the client secret read from standard input
// (one line), as the naive endpoint stores it: bench/http.sh seeds
// bench_baselines.clients with it.
//
//   node hash-secret.js <<<"$secret"

const bcrypt = require('bcrypt');

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const secret = input.replace(/\r?\n$/, '');
  if (secret === '') {
    console.error('no secret on standard input');
    process.exit(2);
  }
  process.stdout.write(bcrypt.hashSync(secret, 10) + '\n');
});
