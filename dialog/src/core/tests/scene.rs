//! What the camera shows enters the prompt of answers started while it is recent.

use super::*;

fn user_message(sim: &Sim, answer: u64) -> String {
    let (_, request) = sim
        .requests()
        .into_iter()
        .find(|(id, _)| *id == answer)
        .expect("the answer's request");
    request
        .messages
        .last()
        .expect("a user message")
        .content
        .clone()
}

#[test]
fn a_recent_scene_prefixes_the_users_words_and_is_not_remembered() {
    let mut sim = Sim::new();
    sim.at(
        100,
        Event::Scene {
            description: Some("a tabby cat".into()),
        },
    );
    let id = sim.typed_answer(1_000, "What do you see?", "A cat. ", &[300]);
    assert_eq!(
        user_message(&sim, id),
        "(My camera shows a tabby cat.) What do you see?"
    );
    sim.run_until(3_000);
    // The memory keeps the user's own words, so the scene of one moment is not carried on.
    assert!(
        sim.core
            .memory()
            .iter()
            .any(|m| m.content == "What do you see?"),
        "{:?}",
        sim.core.memory()
    );
    assert!(sim.events().contains(&ConversationEvent::Scene {
        description: "a tabby cat".into(),
        at_ms: 100
    }));
}

#[test]
fn a_stale_or_cleared_scene_is_left_out() {
    let mut sim = Sim::new();
    sim.at(
        100,
        Event::Scene {
            description: Some("a tabby cat".into()),
        },
    );
    let later = 100 + SCENE_MAX_AGE.as_millis() as u64 + 1;
    let id = sim.typed_answer(later, "What do you see?", "Nothing. ", &[300]);
    assert_eq!(user_message(&sim, id), "What do you see?");

    let t = later + 5_000;
    sim.at(
        t,
        Event::Scene {
            description: Some("an espresso".into()),
        },
    );
    sim.at(t + 10, Event::Scene { description: None });
    let id = sim.typed_answer(t + 100, "And now?", "Nothing. ", &[300]);
    assert_eq!(user_message(&sim, id), "And now?");
    let scenes: Vec<String> = sim
        .events()
        .into_iter()
        .filter_map(|e| match e {
            ConversationEvent::Scene { description, .. } => Some(description),
            _ => None,
        })
        .collect();
    assert_eq!(scenes, ["a tabby cat", "an espresso", ""]);
}

#[test]
fn an_unchanged_scene_refreshes_silently_and_the_prefill_uses_the_same_prompt() {
    let mut sim = Sim::new();
    let scene = |d: &str| Event::Scene {
        description: Some(d.into()),
    };
    sim.at(0, scene("a coffee mug"));
    sim.at(10_000, scene("a coffee mug"));
    // Spoken this time: the partial's prefill and the answer's prompt must agree, or the
    // prefilled cache is wasted.
    sim.at(20_250, Event::SpeechStarted { at: Millis(20_000) });
    sim.at(
        20_600,
        Event::AsrPartial {
            text: "what is this".into(),
            stable_prefix_len: 0,
        },
    );
    sim.at(21_100, Event::SpeechEnded { at: Millis(21_000) });
    sim.finalise(21_200, "what is this", 20_000, 21_000);
    sim.run_until(22_000);
    let prefill = sim.log.iter().find_map(|(_, a)| match a {
        Action::Prefill { messages } => messages.last().map(|m| m.content.clone()),
        _ => None,
    });
    let expected = "(My camera shows a coffee mug.) what is this";
    assert_eq!(prefill.as_deref(), Some(expected));
    assert_eq!(user_message(&sim, 1), expected);
    let scenes = sim
        .events()
        .iter()
        .filter(|e| matches!(e, ConversationEvent::Scene { .. }))
        .count();
    assert_eq!(scenes, 1, "the refresh at 10 s changed nothing");
}
