//! The model worker: one thread owns the model and decodes every request in flight together
//! (continuous batching, [`crate::engine::Batch`]). Requests arrive on a channel; each sends
//! its text and its result back on its own channel. A request whose channel is closed (the
//! client went away) is dropped at the next step, so it never keeps the model busy.

use crate::engine::{Batch, BatchRequest, Generation};
use crate::model::Model;
use std::sync::mpsc;
use tokio::sync::mpsc::UnboundedSender;

/// What a request hears from the worker.
#[derive(Debug)]
pub enum Event {
    /// A piece of text that is final (streaming).
    Text(String),
    /// The finished generation, or why it failed.
    Done(Result<Generation, String>),
}

/// A request for the worker.
pub struct Job {
    /// Prompt ids and sampling values.
    pub request: BatchRequest,
    /// Alternatives per token to keep (0 = none).
    pub top_logprobs: usize,
    /// Whether text is sent as it is generated.
    pub stream: bool,
    /// Where events go.
    pub events: UnboundedSender<Event>,
}

struct Tag {
    events: UnboundedSender<Event>,
    stream: bool,
}

/// Starts the worker thread over `model`, decoding up to `max_batch` requests together.
pub fn start(mut model: Model, max_batch: usize) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("llm-judge-model".into())
        .spawn(move || run(&mut model, &rx, max_batch.max(1)))
        .expect("a thread can be started");
    tx
}

fn run(model: &mut Model, rx: &mpsc::Receiver<Job>, max_batch: usize) {
    let mut batch: Batch<Tag> = Batch::default();
    let mut waiting: std::collections::VecDeque<Job> = Default::default();
    loop {
        // Wait for work when idle; otherwise take whatever arrived since the last step.
        if batch.is_empty() && waiting.is_empty() {
            match rx.recv() {
                Ok(j) => waiting.push_back(j),
                Err(_) => return,
            }
        }
        while let Ok(j) = rx.try_recv() {
            waiting.push_back(j);
        }
        // Clients that went away free their place at once.
        waiting.retain(|j| !j.events.is_closed());
        batch.cancel(|t| t.events.is_closed());
        while batch.len() < max_batch {
            let Some(job) = waiting.pop_front() else {
                break;
            };
            let tag = Tag {
                events: job.events.clone(),
                stream: job.stream,
            };
            let mut send = |piece: &str| {
                let _ = job.events.send(Event::Text(piece.to_string()));
            };
            let on_text = job.stream.then_some(&mut send as &mut dyn FnMut(&str));
            match model.batch_add(&mut batch, tag, &job.request, job.top_logprobs, on_text) {
                Ok(None) => {}
                Ok(Some((tag, g))) => {
                    let _ = tag.events.send(Event::Done(Ok(g)));
                }
                Err(e) => {
                    let _ = job.events.send(Event::Done(Err(e.to_string())));
                }
            }
        }
        let mut text = |t: &Tag, piece: &str| {
            if t.stream {
                let _ = t.events.send(Event::Text(piece.to_string()));
            }
        };
        let streaming = batch.tags().any(|t| t.stream);
        let finished = match model.batch_step(
            &mut batch,
            streaming.then_some(&mut text as &mut crate::engine::TextSink<'_, Tag>),
        ) {
            Ok(f) => f,
            Err(e) => {
                // A failed step fails every sequence in it; the worker goes on.
                let msg = e.to_string();
                for t in batch.tags() {
                    let _ = t.events.send(Event::Done(Err(msg.clone())));
                }
                batch.cancel(|_| true);
                continue;
            }
        };
        for (tag, r) in finished {
            let _ = tag.events.send(Event::Done(r.map_err(|e| e.to_string())));
        }
    }
}
