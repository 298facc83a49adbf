package dispatch

// Isolation says how Isolate applies a batch and settles its items. Every
// callback that takes one gets a one-item slice of the batch, so what it
// changes in the item lands in the caller's batch.
type Isolation[T any] struct {
	// Apply applies items: first the whole batch, then, after the batch
	// failed, each item alone.
	Apply func(items []T) error
	// Stop says whether an error ends the work instead of being the items'
	// own (the database is gone, shutdown came): Isolate returns it.
	Stop func(err error) bool
	// Split, when set, is told that a batch of several failed and its
	// items will be applied one by one.
	Split func(cause error)
	// Applied, when set, settles an item applied alone.
	Applied func(one []T) error
	// Failed settles an item that failed alone.
	Failed func(one []T, cause error) error
}

// Isolate applies items as one batch and, when that fails for a reason of
// the items' own, each alone, so an event that keeps failing holds none of
// the others back. A batch of one is applied once: its failure is its
// item's. It returns whether the whole batch applied at once, or the first
// error Stop, Applied or Failed ends it with.
//
// It is the one way Epoch isolates a failing event: the consumer uses it
// for a batch of deliveries (a transaction each), the operator's dead
// letter replay for stored events (a savepoint each).
func Isolate[T any](items []T, iso Isolation[T]) (whole bool, err error) {
	err = iso.Apply(items)
	if err == nil {
		return true, nil
	}
	if iso.Stop(err) {
		return false, err
	}
	if len(items) > 1 && iso.Split != nil {
		iso.Split(err)
	}
	for i := range items {
		one := items[i : i+1]
		if len(items) > 1 {
			err = iso.Apply(one)
		}
		if err == nil {
			if iso.Applied != nil {
				if err := iso.Applied(one); err != nil {
					return false, err
				}
			}
			continue
		}
		if iso.Stop(err) {
			return false, err
		}
		if err := iso.Failed(one, err); err != nil {
			return false, err
		}
	}
	return false, nil
}
