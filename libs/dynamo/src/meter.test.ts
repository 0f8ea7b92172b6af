import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { describe, expect, it } from 'vitest';
import { classifyError, createDynamoMeter, isTransientError, PermanentWriteError, RetryableWriteError, updateItem } from './index';

/** An error as the AWS SDK throws it for an answer of `status` with error type `name`. */
const answered = (name: string, status: number) =>
  Object.assign(new Error(`${name}: nope`), { name, $metadata: { httpStatusCode: status } });

describe('isTransientError', () => {
  it.each([
    ['ExpiredTokenException', 400],
    ['UnrecognizedClientException', 400],
    ['InvalidSignatureException', 400],
    ['AccessDeniedException', 400],
    ['ResourceNotFoundException', 400],
    ['ResourceInUseException', 400],
    ['RequestLimitExceeded', 400],
    ['TransactionConflictException', 400],
    ['ThrottlingException', 400],
    ['TooManyRequestsException', 429],
    ['ProvisionedThroughputExceededException', 400],
    ['SomeNewAuthError', 403],
    ['InternalServerError', 500],
    ['ServiceUnavailable', 503],
  ])('%s (%i): the same request may succeed later', (name, status) => {
    expect(isTransientError(answered(name, status))).toBe(true);
  });

  it('counts no answer and errors with no HTTP status as transient', () => {
    expect(isTransientError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))).toBe(true);
    expect(isTransientError(Object.assign(new Error('Could not load credentials'), { name: 'CredentialsProviderError' }))).toBe(true);
  });

  it.each([
    ['ValidationException', 400],
    ['SerializationException', 400],
    ['ItemCollectionSizeLimitExceededException', 400],
    ['ConditionalCheckFailedException', 400],
  ])('%s (%i): a refusal of the request itself', (name, status) => {
    expect(isTransientError(answered(name, status))).toBe(false);
  });

  it('keeps the metric outcome of an operational refusal a client error, and of throttling throttled', () => {
    expect(classifyError(answered('AccessDeniedException', 400))).toBe('client_error');
    expect(classifyError(answered('ExpiredTokenException', 400))).toBe('client_error');
    expect(classifyError(answered('TooManyRequestsException', 429))).toBe('throttled');
    expect(classifyError(answered('ValidationException', 400))).toBe('client_error');
  });
});

describe('updateItem errors', () => {
  const refusing = (err: Error) => ({ send: () => Promise.reject(err) }) as unknown as DynamoDBClient;
  const update = {
    UpdateExpression: 'ADD #v :v',
    ExpressionAttributeNames: { '#v': 'v' },
    ExpressionAttributeValues: { ':v': { N: '1' } },
  };

  it.each(['AccessDeniedException', 'ExpiredTokenException', 'UnrecognizedClientException', 'ResourceNotFoundException'])(
    '%s is retryable (the flush waits), not permanent',
    async (name) => {
      const meter = createDynamoMeter();
      const err = await updateItem({ client: refusing(answered(name, 400)), table: 't', meter }, 'S', 'TOTAL', update).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(RetryableWriteError);
      expect((err as Error).message).toMatch(new RegExp(`^${name}: .*\\(item S / TOTAL\\)$`));
      // Still counted as a client error: TallyDynamoErrors names the permissions or the table.
      expect(meter.totals().requests).toEqual({ 'UpdateItem:client_error': 1 });
    },
  );

  it('a ValidationException is permanent (the job goes to the failed set)', async () => {
    const meter = createDynamoMeter();
    const err = await updateItem({ client: refusing(answered('ValidationException', 400)), table: 't', meter }, 'S', 'TOTAL', update).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PermanentWriteError);
  });
});
