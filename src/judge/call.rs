//! How judge calls reach the backend: written as plain `async` code in each mode, run
//! together in batches.
//!
//! A mode's call is an `async` block that asks the judge with [`Asker::generate`] or
//! [`Asker::labels`] and awaits the reply, so each mode reads top to bottom: prompt, call,
//! parse, rows. [`run_calls`] polls many such calls at once: whatever they ask in one round
//! goes to the backend as one batch ([`Backend::generate_batch`], which the local backend
//! decodes together and a remote one sends `in_flight` at a time), and a call continues as
//! soon as its reply is in. Re-asks after an unparseable verdict join the next round. A reply
//! depends only on its own request and seed, so results are the same as one call at a time.

use crate::backend::{Backend, LabelDistribution, LabelQuery};
use crate::engine::Generation;
use crate::error::{Error, Result};
use crate::model::Input;
use crate::records::JudgmentRecord;
use crate::sampling::SamplingParams;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Calls polled at once; more wait their turn. Bounds memory and keeps results flowing to
/// the store while a long run goes on.
const WINDOW: usize = 64;

enum Request {
    Generate(Input, SamplingParams),
    Labels(LabelQuery),
}

enum Reply {
    Generate(Result<Generation>),
    Labels(Result<LabelDistribution>),
}

type Slot = Rc<RefCell<Option<Reply>>>;

/// The queue between the calls and [`run_calls`]: calls push requests, the runner answers.
#[derive(Default)]
pub struct Asker {
    pending: RefCell<Vec<(usize, Request, Slot)>>,
    current: Cell<usize>,
}

struct Wait(Slot);

impl Future for Wait {
    type Output = Reply;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Reply> {
        match self.0.borrow_mut().take() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

impl Asker {
    fn ask(&self, r: Request) -> Wait {
        let slot: Slot = Rc::default();
        self.pending
            .borrow_mut()
            .push((self.current.get(), r, slot.clone()));
        Wait(slot)
    }

    /// Asks the judge to generate a reply.
    pub async fn generate(&self, input: Input, params: SamplingParams) -> Result<Generation> {
        match self.ask(Request::Generate(input, params)).await {
            Reply::Generate(r) => r,
            Reply::Labels(_) => Err(Error::Internal("judge call got the wrong reply".into())),
        }
    }

    /// Asks for the judge's next-token distribution over labels after a reply prefix.
    pub async fn labels(&self, query: LabelQuery) -> Result<LabelDistribution> {
        match self.ask(Request::Labels(query)).await {
            Reply::Labels(r) => r,
            Reply::Generate(_) => Err(Error::Internal("judge call got the wrong reply".into())),
        }
    }
}

/// Two futures at once: both start in the same round (so their requests batch together).
pub async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (Box::pin(a), Box::pin(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(move |cx| {
        if ra.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready((ra.take().expect("set"), rb.take().expect("set")))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// The rows of one judge call, or why it failed.
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<JudgmentRecord>>> + 'a>>;

/// One judge call of a mode: its key (for the store), a label (for progress), and the
/// `async` code that makes it.
pub struct Call<'a> {
    /// Content key of the call: judge, template, settings, answers, order.
    pub key: String,
    /// Short description for progress lines (e.g. `tent-wind`).
    pub label: String,
    /// The call itself.
    pub run: CallFuture<'a>,
}

/// Receives each finished call with its rows, or why it failed.
pub type OnDone<'f, 'a> = dyn FnMut(&Call<'a>, Result<Vec<JudgmentRecord>>) -> Result<()> + 'f;

/// Runs `calls` against `backend`, batching what they ask round by round, and hands each
/// finished call to `on_done` (in finishing order) as soon as it finishes. An error from
/// `on_done` stops the run; a call's own error is handed to `on_done` like a result.
pub fn run_calls<'a>(
    backend: &mut dyn Backend,
    asker: &Asker,
    calls: Vec<Call<'a>>,
    on_done: &mut OnDone<'_, 'a>,
) -> Result<()> {
    let mut waiting: std::collections::VecDeque<Call<'a>> = calls.into();
    let mut live: Vec<Option<Call<'a>>> = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    // Polls call `i` once; a finished call is handed on and its place freed.
    let mut poll = |live: &mut Vec<Option<Call<'a>>>, i: usize| -> Result<()> {
        let Some(call) = live[i].as_mut() else {
            return Ok(());
        };
        asker.current.set(i);
        if let Poll::Ready(r) = call.run.as_mut().poll(&mut cx) {
            let call = live[i].take().expect("polled call exists");
            on_done(&call, r)?;
        }
        Ok(())
    };
    loop {
        // Fill free places from the waiting calls and start them.
        for i in 0..WINDOW {
            if i >= live.len() {
                live.push(None);
            }
            if live[i].is_none() {
                let Some(c) = waiting.pop_front() else { break };
                live[i] = Some(c);
                poll(&mut live, i)?;
            }
        }
        if live.iter().all(Option::is_none) && waiting.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut *asker.pending.borrow_mut());
        if pending.is_empty() {
            if live.iter().any(Option::is_some) {
                return Err(Error::Internal("a judge call waits on no request".into()));
            }
            continue;
        }
        let mut gens = Vec::new();
        let mut labels = Vec::new();
        for (owner, r, slot) in pending {
            match r {
                Request::Generate(input, params) => gens.push((owner, (input, params), slot)),
                Request::Labels(q) => labels.push((owner, q, slot)),
            }
        }
        if !gens.is_empty() {
            let requests: Vec<(Input, SamplingParams)> =
                gens.iter().map(|(_, r, _)| r.clone()).collect();
            backend.generate_batch(&requests, &mut |i, r| {
                let (owner, _, slot) = &gens[i];
                *slot.borrow_mut() = Some(Reply::Generate(r));
                poll(&mut live, *owner)
            })?;
        }
        if !labels.is_empty() {
            let queries: Vec<LabelQuery> = labels.iter().map(|(_, q, _)| q.clone()).collect();
            backend.label_distributions(&queries, &mut |i, r| {
                let (owner, _, slot) = &labels[i];
                *slot.borrow_mut() = Some(Reply::Labels(r));
                poll(&mut live, *owner)
            })?;
        }
    }
}
