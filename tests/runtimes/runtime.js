// A custom runtime in Node.js: the Lambda Runtime API loop with the http module only.
'use strict';
const http = require('http');

const [host, port] = process.env.AWS_LAMBDA_RUNTIME_API.split(':');
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const API = '/2018-06-01/runtime';

function request(method, path, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path, agent, headers: headers || {} }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const handlers = {
  async greet(event, context) {
    console.log(`node got ${JSON.stringify(event)}`);
    if (event.fail) {
      const error = new Error(`cannot greet ${event.name}`);
      error.name = 'GreetingError';
      throw error;
    }
    return { runtime: 'node', greeting: `hello, ${event.name}`, requestId: context.awsRequestId };
  },
};

async function main() {
  const name = (process.env._HANDLER || '').split('.').pop();
  const handler = handlers[name];
  if (!handler) {
    const body = JSON.stringify({ errorType: 'Runtime.HandlerNotFound', errorMessage: `no handler ${name}` });
    await request('POST', `${API}/init/error`, body, { 'Lambda-Runtime-Function-Error-Type': 'Runtime.HandlerNotFound' });
    process.exit(1);
  }
  for (;;) {
    const next = await request('GET', `${API}/invocation/next`);
    if (next.status !== 200) process.exit(0);
    const id = next.headers['lambda-runtime-aws-request-id'];
    const context = { awsRequestId: id, functionName: process.env.AWS_LAMBDA_FUNCTION_NAME };
    try {
      const result = await handler(JSON.parse(next.body), context);
      await request('POST', `${API}/invocation/${id}/response`, JSON.stringify(result));
    } catch (error) {
      const body = JSON.stringify({ errorType: error.name, errorMessage: error.message, stackTrace: (error.stack || '').split('\n') });
      await request('POST', `${API}/invocation/${id}/error`, body, { 'Lambda-Runtime-Function-Error-Type': 'Unhandled' });
    }
  }
}

main().catch((error) => { console.error(error); process.exit(1); });
