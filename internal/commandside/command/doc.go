// Package command runs the write side: each command loads what it needs
// (locking the rows it changes), decides its events with a pure function of
// internal/core/domain, appends them with their expected versions, runs the
// inline subscribers and queues the outbox rows, all in the caller's
// transaction. Run wraps that in a transaction with retries on conflicts.
//
// # One command, start to finish
//
// An upload, POST /v1/files, from the request to the storage subscriber's
// row, with the file and function at each step. Each step names its place
// as an indented line (file, then function or Type.Method);
// TestTheWalkThroughNamesWhatExists keeps them true.
//
// 1. The request. The api's mux sends it to the handler registered in
// New; authed turns the bearer token into a user, from its cache or
// through the operator package's lookup.
//
//	internal/httpapi/httpapi.go     New
//	internal/httpapi/auth.go        server.authed
//	internal/ops/operator/users.go  Operator.UserByTokenHash
//
// 2. The handler reads the body strictly (one JSON object, no unknown or
// repeated key) and applies the input rules of internal/core/domain, so a
// refused request writes nothing.
//
//	internal/httpapi/handlers.go  server.uploadFile
//	internal/httpapi/input.go     decodeJSON
//	internal/httpapi/handlers.go  fileInput.command
//
// 3. One transaction. runCommand handles the Idempotency-Key in the same
// transaction and hands it to Service.Run, the one retry loop of a
// command (behind the backpressure gate); InTx opens it, without a BEGIN
// of its own.
//
//	internal/httpapi/idempotency.go          server.runCommand
//	internal/commandside/command/service.go  Service.Run
//	internal/platform/database/tx.go         InTx
//
// 4. The command decides its events with a pure function and writes them:
// an event each, with the next version of its stream, appended with the
// database's clock; the expected version is what keeps two writers of one
// stream apart (ErrConcurrency, and Run tries again).
//
//	internal/commandside/command/service.go  Service.UploadFile
//	internal/core/domain/decide.go           NewFile
//	internal/commandside/command/service.go  Service.write
//	internal/core/eventstore/eventstore.go   Append
//
// 5. In the same transaction the dispatcher runs the projections the api
// reads back (files, jobs, job_files), then any movable subscriber
// configured inline (through its inbox, so a remote copy later is a
// no-op), then queues the outbox rows: one per run of consecutive
// positions of a partition, and the relays' wake-up to follow the COMMIT.
//
//	internal/delivery/dispatch/dispatch.go         Dispatcher.Dispatch
//	internal/commandside/projection/projection.go  Subscriber.Handle
//	internal/delivery/dispatch/dispatch.go         Deliver
//	internal/delivery/outbox/enqueue.go            Enqueue
//
// 6. The answer is read with the COMMIT, in its round trip, so it shows
// the command's own writes; the response carries Epoch-Position.
//
//	internal/httpapi/idempotency.go   server.commandOnce
//	internal/platform/database/tx.go  Tx.ReadAtCommit
//	internal/httpapi/handlers.go      fileAnswer
//	internal/platform/database/tx.go  Tx.commit
//
// 7. The relay, in the worker, wakes on the NOTIFY (or its poll), claims
// outbox rows gap-safely, publishes each event as a message of the
// contract with publisher confirms, and deletes the rows once confirmed.
//
//	internal/delivery/outbox/relay.go      Relay.Run
//	internal/delivery/outbox/relay.go      Relay.cycle
//	internal/delivery/outbox/relay.go      Relay.publish
//	internal/delivery/outbox/message.go    Message
//	internal/delivery/broker/publisher.go  Publisher.Publish
//
// 8. RabbitMQ routes it by its type (file.uploaded) from the exchange
// catacloud.events to each subscriber's queue bound to that type,
// catacloud.storage and catacloud.billing, as the worker declared them
// from the subscriber registry.
//
//	internal/delivery/broker/broker.go   DeclareTopology
//	internal/subscribers/subscribers.go  List.Subscriptions
//
// 9. The consumer of each queue collects a batch of deliveries, and in one
// transaction per batch decodes them, finds each one's stored event and
// claims its inbox row in one statement (InboxClaimStored), and applies
// the stored events, never the bodies; a message that names no stored
// event or differs from it is kept as a dead letter. A batch that fails
// is split, each delivery alone (dispatch.Isolate). It acks after the
// COMMIT.
//
//	internal/delivery/consumer/consumer.go  Consumer.Run
//	internal/delivery/consumer/consumer.go  Consumer.collect
//	internal/delivery/consumer/consumer.go  Consumer.handle
//	internal/delivery/dispatch/isolate.go   Isolate
//	internal/delivery/consumer/consumer.go  Consumer.applyOnce
//	internal/delivery/consumer/verify.go    readNotice
//	internal/delivery/consumer/verify.go    claimStored
//
// 10. The subscriber writes its rows in that transaction: the inbox row
// claimed beside them is what makes a redelivery, a heal or a redrive of
// the same event a no-op. After the COMMIT the consumer announces it
// (NOTIFY epoch_applied).
//
//	internal/subscribers/storage/storage.go  Subscriber.Handle
//	internal/delivery/consumer/consumer.go   Consumer.announcer
//	internal/delivery/dispatch/dispatch.go   Notify
//
// 11. Reading it back: GET /v1/storage?min_position=N waits, holding no
// connection, until the watcher woken by that NOTIFY sees storage applied
// the caller's events up to N, then reads the row.
//
//	internal/httpapi/subscribers.go          server.getStorage
//	internal/delivery/catchup/watcher.go     Watcher.Wait
//	internal/subscribers/storage/storage.go  Read
//
// A link, PUT /v1/jobs/{id}/files/{file_id}, takes the same way with
// Service.LinkFile, which first locks the job row and, shared, the file's
// advisory lock (lockJobAndRead) and decides with domain.Link; its
// job.file_linked is for the projections and outside consumers: no
// subscriber of ours takes it, and the broker keeps it in
// catacloud.unsubscribed.
package command
