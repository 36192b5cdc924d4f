// SPDX-License-Identifier: Apache-2.0
/*
 * The retry budget's token bucket (see retry_budget.h), one per service of a
 * worker's balancer_set. Worker-local like the rest of the balancer: no
 * locks; time is passed in.
 */
#include "balancer/balancer_int.h"
#include "balancer/retry_budget.h"

static void advance(struct retry_budget *b, uint64_t now_ms, double ratio, double min_per_s)
{
	double cap;

	if (!b->started) {
		b->started = true;
		b->tokens = min_per_s;
		b->last_ms = b->win_start_ms = now_ms;
	}
	if (now_ms >= b->win_start_ms + 2 * RETRY_BUDGET_WINDOW_MS) {
		b->win_prev = b->win_cur = 0;
		b->win_start_ms = now_ms;
	} else if (now_ms >= b->win_start_ms + RETRY_BUDGET_WINDOW_MS) {
		b->win_prev = b->win_cur;
		b->win_cur = 0;
		b->win_start_ms += RETRY_BUDGET_WINDOW_MS;
	}
	if (now_ms > b->last_ms) {
		b->tokens += min_per_s * (double)(now_ms - b->last_ms) / 1000.0;
		b->last_ms = now_ms;
	}
	cap = min_per_s + ratio * (double)(b->win_cur + b->win_prev);
	if (cap < 1)
		cap = 1; /* a deposit of less than one retry still adds up to one */
	if (b->tokens > cap)
		b->tokens = cap;
}

void retry_budget_deposit(struct retry_budget *b, uint64_t now_ms, double ratio, double min_per_s)
{
	advance(b, now_ms, ratio, min_per_s);
	if (b->win_cur < UINT32_MAX)
		b->win_cur++;
	b->tokens += ratio;
}

bool retry_budget_withdraw(struct retry_budget *b, uint64_t now_ms, double ratio, double min_per_s)
{
	advance(b, now_ms, ratio, min_per_s);
	if (b->tokens < 1)
		return false;
	b->tokens -= 1;
	return true;
}

void balancer_retry_deposit(struct balancer_set *bs, uint32_t service_id, uint64_t now_ms,
			    double ratio, double min_per_s)
{
	struct lb_service *ls = *lb_service_slot(bs, service_id);

	if (ls)
		retry_budget_deposit(&ls->budget, now_ms, ratio, min_per_s);
}

bool balancer_retry_withdraw(struct balancer_set *bs, uint32_t service_id, uint64_t now_ms,
			     double ratio, double min_per_s)
{
	struct lb_service *ls = *lb_service_slot(bs, service_id);

	return ls && retry_budget_withdraw(&ls->budget, now_ms, ratio, min_per_s);
}
